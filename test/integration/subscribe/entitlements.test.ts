/**
 * Contract entitlements from AWS, through the registration service against the emulator and Redis: a
 * buyer who registers gets its entitlements fetched (throttling and 500s retried, every page read, only its
 * own), a signed `entitlement-updated` SNS message and an EventBridge `License Updated` fetch them again,
 * the schedule refreshes every contract buyer, and a fetch AWS keeps failing stores nothing: the contract
 * stored before stays in force, and the event is answered 503 so it is delivered again.
 */
import { createSign } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { FaultAction } from '../../../src/emulator/emulator-types.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { EntitlementStore } from '../../../src/state/entitlement-store.ts';
import { contractsFromEntitlements } from '../../../src/subscribe/entitlements.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { type SnsMessage, snsStringToSign } from '../../../src/subscribe/sns-message.ts';
import { deleteKeys, stackEnv, testLogger, waitFor } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { certPath, makeTestCa } from '../../support/sns-test-ca.ts';

const ENTITLEMENT_TOPIC = 'arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-prod-test';
const CERT_URL = `https://sns.us-east-1.amazonaws.com${certPath('entitlements')}`;
const API_KEY = 'entitlements-test-events-api-key-0123';
const BUYER = {
  customerAwsAccountId: '555555555555',
  licenseArn: 'arn:aws:license-manager::555555555555:license:l-e5',
};
const OTHER = '666666666666';
const LEGACY = 'cust-legacy-ent';
const EXPIRES = '2027-06-01T00:00:00.000Z';

describe('entitlements from GetEntitlements', () => {
  const ca = makeTestCa('entitlements');
  const stops: (() => Promise<unknown> | unknown)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    if (tp) await deleteKeys(tp.run);
    ca.cleanup();
  });

  it('are fetched on registration, on events and on the schedule; a failing fetch keeps what was stored', async () => {
    let fault: ((operation: string) => FaultAction | undefined) | undefined;
    const calls: string[] = [];
    // Pages of 2: the buyer's three entitlements take two pages.
    const emulator: RunningEmulator = await startEmulator({
      entitlementsPageSize: 2,
      faults: {
        beforeOperation: (operation) => {
          if (operation === 'GetEntitlements') calls.push(operation);
          return fault?.(operation);
        },
      },
    });
    stops.push(() => emulator.close());
    const setEntitlements = async (body: unknown) => {
      const res = await fetch(`${emulator.url}/_emulator/entitlements`, {
        method: 'POST',
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(200);
    };
    await setEntitlements({
      set: [
        { productCode: 'prod-test', ...BUYER, dimension: 'overage_gb', value: 500, expirationDate: EXPIRES },
        { productCode: 'prod-test', ...BUYER, dimension: 'extra_seats', value: 2.5 },
        { productCode: 'prod-test', ...BUYER, dimension: 'tier', value: { StringValue: 'gold' } },
        { productCode: 'prod-test', customerAwsAccountId: OTHER, dimension: 'overage_gb', value: 1 },
        { productCode: 'prod-test', customerIdentifier: LEGACY, dimension: 'overage_gb', value: 70 },
      ],
    });
    tp = testPipeline('entitlements', {
      dimensions: [
        { name: 'overage_gb', model: 'contract' },
        { name: 'extra_seats', model: 'contract' },
        { name: 'api_calls' },
      ],
      customers: {},
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
        METERLINE_EVENTS_API_KEY: API_KEY,
      },
    });
    const registration: RunningRegistration = await startRegistration(
      tp.config(['registration']),
      testLogger(),
      {
        sns: { roots: [ca.root], get: async () => Buffer.from(ca.sns.cert) },
      },
    );
    stops.push(() => registration.stop());
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const store = new EntitlementStore(redis, new Keys(tp.run));
    const base = `http://127.0.0.1:${registration.server.port}/marketplace`;

    // 1. Registration: the first two calls are throttled and the third fails with a 500; all retried.
    let failures = 3;
    fault = (operation) =>
      operation === 'GetEntitlements' && failures-- > 0
        ? {
            kind: 'error',
            error:
              failures >= 1
                ? new ServiceError('ThrottlingException', 'Rate exceeded')
                : new ServiceError('InternalServiceErrorException', 'An internal error occurred'),
          }
        : undefined;
    const token = await mintToken(emulator.url, { productCode: 'prod-test', ...BUYER });
    const res = await fetch(`${base}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ 'x-amzn-marketplace-token': token }).toString(),
    });
    expect(res.status).toBe(200);
    const first = await waitFor(() => store.get(BUYER.customerAwsAccountId, 'prod-test'), {
      timeoutMs: 30_000,
      describe: () => `no entitlements stored after ${calls.length} GetEntitlements calls`,
    });
    // 3 failed attempts, then 2 pages.
    expect(calls).toHaveLength(5);
    expect(first.dimensions).toEqual({
      overage_gb: { value: 500, expiresAt: EXPIRES },
      extra_seats: { value: 2.5 },
    });
    expect(first.periodStart).toBeDefined();
    const contract = contractsFromEntitlements(await store.all()).get(BUYER.customerAwsAccountId);
    expect(contract).toMatchObject({
      start: first.periodStart,
      period: 'month',
      entitlements: { overage_gb: 500, extra_seats: 2.5 },
      expiresAtMs: { overage_gb: Date.parse(EXPIRES) },
    });

    // 2. entitlement-updated (signed SNS): fetched again before it is acknowledged.
    await setEntitlements({
      set: [{ productCode: 'prod-test', ...BUYER, dimension: 'overage_gb', value: 800 }],
    });
    let n = 0;
    const sns = async (message: Record<string, string>) => {
      const unsigned: SnsMessage = {
        Type: 'Notification',
        MessageId: `ent-${++n}`,
        TopicArn: ENTITLEMENT_TOPIC,
        Timestamp: new Date().toISOString(),
        Message: JSON.stringify(message),
        SignatureVersion: '2',
        SigningCertURL: CERT_URL,
        Signature: '',
      };
      const signature = createSign('RSA-SHA256').update(snsStringToSign(unsigned)).sign(ca.sns.key, 'base64');
      const r = await fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'x-amz-sns-message-type': 'Notification', 'content-type': 'text/plain; charset=UTF-8' },
        body: JSON.stringify({ ...unsigned, Signature: signature }),
      });
      return [r.status, (await r.text()).trim()] as const;
    };
    const updated = {
      action: 'entitlement-updated',
      'customer-aws-account-id': BUYER.customerAwsAccountId,
      'product-code': 'prod-test',
    };
    expect(await sns(updated)).toEqual([200, 'entitlements_refreshed']);
    const second = await store.get(BUYER.customerAwsAccountId, 'prod-test');
    expect(second?.dimensions.overage_gb).toEqual({ value: 800 });
    expect(Date.parse(second?.fetchedAt ?? '')).toBeGreaterThanOrEqual(Date.parse(first.fetchedAt));
    // A buyer that never registered changes nothing.
    expect(
      await sns({
        action: 'entitlement-updated',
        'customer-aws-account-id': OTHER,
        'product-code': 'prod-test',
      }),
    ).toEqual([200, 'unknown_customer']);
    expect(await store.get(OTHER, 'prod-test')).toBeUndefined();

    // 3. AWS keeps failing (500s, then throttling): nothing is stored, the contract stands, and the
    //    event is answered 503 so SNS delivers it again.
    await setEntitlements({
      set: [{ productCode: 'prod-test', ...BUYER, dimension: 'overage_gb', value: 5 }],
    });
    for (const type of ['InternalServiceErrorException', 'ThrottlingException']) {
      fault = (operation) =>
        operation === 'GetEntitlements'
          ? { kind: 'error', error: new ServiceError(type, 'failing') }
          : undefined;
      const before = calls.length;
      expect(await sns(updated)).toEqual([503, 'entitlements could not be fetched; deliver again']);
      expect(calls.length - before).toBe(6);
      expect(await store.get(BUYER.customerAwsAccountId, 'prod-test')).toEqual(second);
    }
    // The same message delivered again once AWS answers: applied (it was not remembered as handled).
    fault = undefined;
    n -= 1;
    expect(await sns(updated)).toEqual([200, 'entitlements_refreshed']);
    expect((await store.get(BUYER.customerAwsAccountId, 'prod-test'))?.dimensions.overage_gb).toEqual({
      value: 5,
    });

    // 4. EventBridge License Updated: the status is applied and the entitlements are fetched again.
    await setEntitlements({
      set: [{ productCode: 'prod-test', ...BUYER, dimension: 'overage_gb', value: 900 }],
    });
    const eb = await fetch(`${base}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-meterline-api-key': API_KEY },
      body: JSON.stringify({
        source: 'aws.agreement-marketplace',
        'detail-type': 'License Updated',
        time: new Date().toISOString(),
        detail: { license: { arn: BUYER.licenseArn }, product: { code: 'prod-test' } },
      }),
    });
    expect(eb.status).toBe(200);
    expect((await store.get(BUYER.customerAwsAccountId, 'prod-test'))?.dimensions.overage_gb).toEqual({
      value: 900,
    });

    // 5. The schedule: one round refreshes every contract buyer, a legacy one by CUSTOMER_IDENTIFIER.
    await registration.directory.register(
      LEGACY,
      { productCode: 'prod-test', customerIdentifier: LEGACY },
      Date.now(),
    );
    await setEntitlements({
      set: [{ productCode: 'prod-test', ...BUYER, dimension: 'overage_gb', value: 950 }],
    });
    expect(await registration.entitlements.refreshAll()).toEqual({ stored: 2, failed: 0 });
    expect((await store.get(BUYER.customerAwsAccountId, 'prod-test'))?.dimensions.overage_gb).toEqual({
      value: 950,
    });
    expect((await store.get(LEGACY, 'prod-test'))?.dimensions).toEqual({ overage_gb: { value: 70 } });
    // A round in which AWS fails keeps both.
    const kept = await store.all();
    fault = (operation) =>
      operation === 'GetEntitlements'
        ? { kind: 'error', error: new ServiceError('InternalServiceErrorException', 'down') }
        : undefined;
    expect(await registration.entitlements.refreshAll()).toEqual({ stored: 0, failed: 2 });
    expect(await store.all()).toEqual(kept);
  }, 120_000);
});

async function mintToken(url: string, grant: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/_emulator/registration-tokens`, {
    method: 'POST',
    body: JSON.stringify(grant),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { token: string }).token;
}
