/**
 * GetEntitlements (AWS Marketplace Entitlement Service) through the real SDK v3 client: the emulator
 * answers from entitlements set through its admin API, filtered by customer (account id or the legacy
 * identifier, never both), dimension or license, page by page with NextToken, and fails with the
 * service's own error shapes: ThrottlingException, InternalServiceErrorException (HTTP 500) and
 * InvalidParameterException.
 */
import {
  GetEntitlementsCommand,
  type GetEntitlementsCommandInput,
  InternalServiceErrorException,
  InvalidParameterException,
  MarketplaceEntitlementServiceClient,
  ThrottlingException,
} from '@aws-sdk/client-marketplace-entitlement-service';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { FaultAction } from '../../../src/emulator/emulator-types.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import { CREDENTIALS, NOW, PRODUCT, rejection } from '../../support/emulator.ts';

const BUYER = '123412341234';
const BUYER_LICENSE = 'arn:aws:license-manager::123412341234:license:l-ent1';
const OTHER = '567856785678';
const EXPIRES = '2027-11-15T00:00:00.000Z';

let emulator: RunningEmulator;
let client: MarketplaceEntitlementServiceClient;
let fault: ((operation: string) => FaultAction | undefined) | undefined;

beforeAll(async () => {
  emulator = await startEmulator({
    now: () => NOW,
    faults: { beforeOperation: (operation) => fault?.(operation) },
  });
  client = new MarketplaceEntitlementServiceClient({
    endpoint: emulator.url,
    region: 'us-east-1',
    credentials: CREDENTIALS,
    maxAttempts: 1,
  });
});
afterAll(async () => {
  client.destroy();
  await emulator.close();
});
beforeEach(async () => {
  fault = undefined;
  await admin({ clear: true });
});

async function admin(body: unknown): Promise<Response> {
  return fetch(`${emulator.url}/_emulator/entitlements`, { method: 'POST', body: JSON.stringify(body) });
}

async function all(input: GetEntitlementsCommandInput) {
  const pages = [];
  let NextToken: string | undefined;
  do {
    const out = await client.send(
      new GetEntitlementsCommand({ ...input, ...(NextToken ? { NextToken } : {}) }),
    );
    pages.push(out.Entitlements ?? []);
    NextToken = out.NextToken;
  } while (NextToken);
  return pages;
}

describe('GetEntitlements', () => {
  it("answers a customer's entitlements with their value, expiration date and license", async () => {
    const res = await admin({
      set: [
        {
          productCode: PRODUCT,
          customerAwsAccountId: BUYER,
          licenseArn: BUYER_LICENSE,
          dimension: 'overage_gb',
          value: 500,
          expirationDate: EXPIRES,
        },
        {
          productCode: PRODUCT,
          customerAwsAccountId: BUYER,
          dimension: 'tier',
          value: { StringValue: 'gold' },
        },
        { productCode: PRODUCT, customerAwsAccountId: OTHER, dimension: 'overage_gb', value: 9 },
        { productCode: 'prod-other', customerAwsAccountId: BUYER, dimension: 'overage_gb', value: 7 },
      ],
    });
    expect(res.status).toBe(200);
    const out = await client.send(
      new GetEntitlementsCommand({ ProductCode: PRODUCT, Filter: { CUSTOMER_AWS_ACCOUNT_ID: [BUYER] } }),
    );
    expect(out.NextToken).toBeUndefined();
    expect(out.Entitlements).toEqual([
      {
        ProductCode: PRODUCT,
        CustomerAWSAccountId: BUYER,
        LicenseArn: BUYER_LICENSE,
        Dimension: 'overage_gb',
        Value: { IntegerValue: 500 },
        ExpirationDate: new Date(EXPIRES),
      },
      {
        ProductCode: PRODUCT,
        CustomerAWSAccountId: BUYER,
        Dimension: 'tier',
        Value: { StringValue: 'gold' },
      },
    ]);
    // Filters: the union of a key's values, intersected across keys.
    const both = await client.send(
      new GetEntitlementsCommand({
        ProductCode: PRODUCT,
        Filter: { CUSTOMER_AWS_ACCOUNT_ID: [BUYER, OTHER], DIMENSION: ['overage_gb'] },
      }),
    );
    expect(both.Entitlements?.map((e) => [e.CustomerAWSAccountId, e.Value?.IntegerValue])).toEqual([
      [BUYER, 500],
      [OTHER, 9],
    ]);
    const byLicense = await client.send(
      new GetEntitlementsCommand({ ProductCode: PRODUCT, Filter: { LICENSE_ARN: [BUYER_LICENSE] } }),
    );
    expect(byLicense.Entitlements?.map((e) => e.Dimension)).toEqual(['overage_gb']);
    // Setting an entitlement again replaces it (a contract upgraded); a customer without any gets none.
    await admin({
      set: [{ productCode: PRODUCT, customerAwsAccountId: BUYER, dimension: 'overage_gb', value: 800.5 }],
    });
    const upgraded = await client.send(
      new GetEntitlementsCommand({
        ProductCode: PRODUCT,
        Filter: { CUSTOMER_AWS_ACCOUNT_ID: [BUYER], DIMENSION: ['overage_gb'] },
      }),
    );
    expect(upgraded.Entitlements?.map((e) => e.Value)).toEqual([{ DoubleValue: 800.5 }]);
    const none = await client.send(
      new GetEntitlementsCommand({
        ProductCode: PRODUCT,
        Filter: { CUSTOMER_AWS_ACCOUNT_ID: ['000000000000'] },
      }),
    );
    expect(none.Entitlements).toEqual([]);
  });

  it('answers legacy customers by CUSTOMER_IDENTIFIER, and refuses both customer filters at once', async () => {
    await admin({
      set: [{ productCode: PRODUCT, customerIdentifier: 'legacy-9', dimension: 'overage_gb', value: 3 }],
    });
    const out = await client.send(
      new GetEntitlementsCommand({ ProductCode: PRODUCT, Filter: { CUSTOMER_IDENTIFIER: ['legacy-9'] } }),
    );
    expect(out.Entitlements).toEqual([
      {
        ProductCode: PRODUCT,
        CustomerIdentifier: 'legacy-9',
        Dimension: 'overage_gb',
        Value: { IntegerValue: 3 },
      },
    ]);
    const error = await rejection(
      client.send(
        new GetEntitlementsCommand({
          ProductCode: PRODUCT,
          Filter: { CUSTOMER_IDENTIFIER: ['legacy-9'], CUSTOMER_AWS_ACCOUNT_ID: [BUYER] },
        }),
      ),
    );
    expect(error).toBeInstanceOf(InvalidParameterException);
    expect(error.$metadata).toMatchObject({ httpStatusCode: 400 });
  });

  it('pages through NextToken: every entitlement once, in pages of MaxResults', async () => {
    const set = Array.from({ length: 60 }, (_, i) => ({
      productCode: PRODUCT,
      customerAwsAccountId: String(100000000000 + i),
      dimension: 'overage_gb',
      value: i,
    }));
    await admin({ set });
    const pages = await all({ ProductCode: PRODUCT, MaxResults: 25 });
    expect(pages.map((p) => p.length)).toEqual([25, 25, 10]);
    expect(pages.flat().map((e) => e.Value?.IntegerValue)).toEqual(set.map((s) => s.value));
    // The default page is smaller than the whole list too.
    const defaults = await all({ ProductCode: PRODUCT });
    expect(defaults.length).toBeGreaterThan(1);
    expect(defaults.flat()).toHaveLength(60);
    // A token that was not issued for this request is refused.
    const forged = await rejection(
      client.send(new GetEntitlementsCommand({ ProductCode: PRODUCT, NextToken: 'not-a-token' })),
    );
    expect(forged).toBeInstanceOf(InvalidParameterException);
  });

  it('throttles and fails with 500 in the service’s shapes (scripted and rate-based faults)', async () => {
    fault = (operation) =>
      operation === 'GetEntitlements'
        ? { kind: 'error', error: new ServiceError('ThrottlingException', 'Rate exceeded') }
        : undefined;
    const throttled = await rejection(client.send(new GetEntitlementsCommand({ ProductCode: PRODUCT })));
    expect(throttled).toBeInstanceOf(ThrottlingException);
    fault = undefined;
    await fetch(`${emulator.url}/_emulator/faults`, {
      method: 'POST',
      body: JSON.stringify({ errorRate: 1 }),
    });
    try {
      const failed = await rejection(client.send(new GetEntitlementsCommand({ ProductCode: PRODUCT })));
      expect(failed).toBeInstanceOf(InternalServiceErrorException);
      expect(failed.$metadata).toMatchObject({ httpStatusCode: 500 });
    } finally {
      await fetch(`${emulator.url}/_emulator/faults`, {
        method: 'POST',
        body: JSON.stringify({ errorRate: 0 }),
      });
    }
    expect(emulator.state.snapshot().calls.GetEntitlements).toBeGreaterThanOrEqual(2);
  });

  it('refuses a request without a product code, and bad admin input with every problem listed', async () => {
    const error = await rejection(client.send(new GetEntitlementsCommand({ ProductCode: '' })));
    expect(error.name).toBe('ValidationException');
    const res = await admin({
      set: [{ productCode: PRODUCT, dimension: '', value: 'x', expirationDate: 'soon' }],
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { issues: string[] };
    expect(body.issues.length).toBeGreaterThanOrEqual(3);
    expect((await (await fetch(`${emulator.url}/_emulator/entitlements`)).json()) as unknown).toEqual({
      entitlements: [],
    });
  });
});
