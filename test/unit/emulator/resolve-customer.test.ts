/**
 * ResolveCustomer and the registration tokens behind it, through the real SDK v3 client: the emulator
 * mints a token as AWS Marketplace would hand it to the buyer's browser, and answers with the buyer's
 * identity, InvalidTokenException or ExpiredTokenException.
 */
import {
  BatchMeterUsageCommand,
  ExpiredTokenException,
  InvalidTokenException,
  type MarketplaceMeteringClient,
  ResolveCustomerCommand,
} from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { HOUR, NOW, PRODUCT, rejection, sdkClient } from '../../support/emulator.ts';

const BUYER = '123412341234';
const BUYER_LICENSE = 'arn:aws:license-manager::123412341234:license:l-resolve1';

let clock = NOW;
let emulator: RunningEmulator;
let client: MarketplaceMeteringClient;

beforeAll(async () => {
  emulator = await startEmulator({ now: () => clock });
  client = sdkClient(emulator.url);
});
afterAll(async () => {
  client.destroy();
  await emulator.close();
});

async function mint(body: unknown): Promise<Response> {
  return fetch(`${emulator.url}/_emulator/registration-tokens`, {
    method: 'POST',
    body: JSON.stringify(body),
  });
}

describe('ResolveCustomer', () => {
  it('answers the identity the token was minted for, and the buyer is subscribed', async () => {
    const res = await mint({ productCode: PRODUCT, customerAwsAccountId: BUYER, licenseArn: BUYER_LICENSE });
    expect(res.status).toBe(200);
    const { token, expiresAt } = (await res.json()) as { token: string; expiresAt: string };
    expect(Date.parse(expiresAt)).toBe(NOW + HOUR);
    const out = await client.send(new ResolveCustomerCommand({ RegistrationToken: token }));
    expect(out).toMatchObject({
      CustomerAWSAccountId: BUYER,
      LicenseArn: BUYER_LICENSE,
      ProductCode: PRODUCT,
    });
    expect(out.CustomerIdentifier).toBeUndefined();
    // Resolving again is allowed until the token expires.
    expect((await client.send(new ResolveCustomerCommand({ RegistrationToken: token }))).ProductCode).toBe(
      PRODUCT,
    );
    const batch = await client.send(
      new BatchMeterUsageCommand({
        UsageRecords: [
          {
            CustomerAWSAccountId: BUYER,
            LicenseArn: BUYER_LICENSE,
            Dimension: 'api_calls',
            Quantity: 1,
            Timestamp: new Date(NOW - HOUR),
          },
        ],
      }),
    );
    expect(batch.Results?.[0]?.Status).toBe('Success');
  });

  it('answers a legacy product with its CustomerIdentifier', async () => {
    const { token } = (await (
      await mint({ productCode: PRODUCT, customerIdentifier: 'legacy-77' })
    ).json()) as {
      token: string;
    };
    const out = await client.send(new ResolveCustomerCommand({ RegistrationToken: token }));
    expect(out).toMatchObject({ CustomerIdentifier: 'legacy-77', ProductCode: PRODUCT });
    expect(out.CustomerAWSAccountId).toBeUndefined();
  });

  it('refuses unknown and expired tokens with their exception classes', async () => {
    const unknown = await rejection(client.send(new ResolveCustomerCommand({ RegistrationToken: 'forged' })));
    expect(unknown).toBeInstanceOf(InvalidTokenException);
    const { token } = (await (
      await mint({
        productCode: PRODUCT,
        customerAwsAccountId: BUYER,
        licenseArn: BUYER_LICENSE,
        ttlSeconds: 60,
      })
    ).json()) as { token: string };
    clock = NOW + 60_000;
    try {
      const expired = await rejection(client.send(new ResolveCustomerCommand({ RegistrationToken: token })));
      expect(expired).toBeInstanceOf(ExpiredTokenException);
    } finally {
      clock = NOW;
    }
  });

  it('lists every mistake of a token request', async () => {
    const res = await mint({ customerAwsAccountId: '12', licenseArn: 'nope', ttlSeconds: 'soon' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { issues: string[] };
    expect(body.issues).toEqual([
      'customerAwsAccountId must be a string matching /^\\d{12}$/',
      'licenseArn must be a string matching /^arn:aws[a-z-]*:license-manager:/',
      'productCode is required',
      'customerAwsAccountId (with licenseArn) or customerIdentifier is required',
      'ttlSeconds must be a number',
    ]);
  });
});
