/**
 * Issue 17, point 2: the seller's application links its own tenant id to the buyer's AWS identity with the
 * signed hand-off token its onboarding page received. Over HTTP against the real registration service
 * (POST /marketplace/link, with the link API key) and through the real CLI (`meterline customers link`):
 * a forged, expired or reused token links nothing (a clear error, 4xx or exit 1), a call without the key is
 * refused, and after a link the usage sent under the seller's tenant id is billed to that AWS identity with
 * its license (the processor and worker on a simulated clock; ground truth: what the emulator accepted).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { signHandoff } from '../../src/subscribe/handoff.ts';
import { type RunningRegistration, startRegistration } from '../../src/subscribe/registration.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { cli } from '../support/cli.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';

const kafka = testKafka();
const SECRET = 'link-test-secret-0123456789-abcdefghijkl';
const LINK_KEY = 'l'.repeat(40);
const BUYER = {
  productCode: 'prod-test',
  customerAwsAccountId: '343434343434',
  licenseArn: 'arn:aws:license-manager::343434343434:license:l-k3',
};
const OTHER = {
  productCode: 'prod-test',
  customerAwsAccountId: '565656565656',
  licenseArn: 'arn:aws:license-manager::565656565656:license:l-k5',
};

describe("linking the seller's tenant id", () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('links only with a genuine, fresh, unused token, and usage under the linked id is billed', async () => {
    const H = hourStart(Date.now()) - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 60_000);
    const emulator: RunningEmulator = await startEmulator({
      customers: [BUYER, OTHER].map((c) => ({ id: c.customerAwsAccountId, licenseArn: c.licenseArn })),
      now,
    });
    stops.push(() => emulator.close());
    tp = testPipeline('tenantlink', {
      partitions: 1,
      customers: {},
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
        METERLINE_HANDOFF_SIGNING_SECRET: SECRET,
        METERLINE_LINK_API_KEY: LINK_KEY,
      },
    });
    await tp.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const directory = new CustomerDirectory(redis, new Keys(tp.run));
    // Both buyers registered as registration does: under their AWS account id.
    await directory.register(BUYER.customerAwsAccountId, BUYER, now());
    await directory.register(OTHER.customerAwsAccountId, OTHER, now());
    const registration: RunningRegistration = await startRegistration(
      tp.config(['registration']),
      testLogger(),
    );
    stops.push(() => registration.stop());

    const post = async (body: unknown, key: string | null = LINK_KEY) => {
      const res = await fetch(`http://127.0.0.1:${registration.server.port}/marketplace/link`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key ? { 'x-meterline-api-key': key } : {}) },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const tenants = async () =>
      Object.fromEntries((await directory.subscriptions()).map((e) => [e.customerAwsAccountId, e.tenant]));
    const unlinked = {
      [BUYER.customerAwsAccountId]: BUYER.customerAwsAccountId,
      [OTHER.customerAwsAccountId]: OTHER.customerAwsAccountId,
    };
    const token = (c: typeof BUYER, options: { nowMs?: number; secret?: string } = {}) =>
      signHandoff(c, c.customerAwsAccountId, options.secret ?? SECRET, {
        nowMs: options.nowMs ?? Date.now(),
      });

    // Without the link key, or with another one: refused, and the token is not spent.
    const genuine = token(BUYER);
    expect((await post({ token: genuine, tenant: 'acme-corp' }, null)).status).toBe(401);
    expect((await post({ token: genuine, tenant: 'acme-corp' }, 'x'.repeat(40))).status).toBe(401);
    // Forged (another key) and expired tokens link nothing.
    const forged = await post({ token: token(BUYER, { secret: 'z'.repeat(40) }), tenant: 'acme-corp' });
    expect([forged.status, forged.body.error]).toEqual([403, 'handoff_token_invalid']);
    const expired = await post({
      token: token(BUYER, { nowMs: Date.now() - 2 * HOUR_MS }),
      tenant: 'acme-corp',
    });
    expect([expired.status, expired.body.error]).toEqual([403, 'handoff_token_expired']);
    const badTenant = await post({ token: genuine, tenant: 'a\u0001b' });
    expect([badTenant.status, badTenant.body.error]).toEqual([400, 'tenant_invalid']);
    expect(await tenants()).toEqual(unlinked);

    // The genuine token links once; posted again it is refused as reused.
    const linked = await post({ token: genuine, tenant: 'acme-corp' });
    expect(linked).toEqual({
      status: 200,
      body: {
        tenant: 'acme-corp',
        previousTenant: BUYER.customerAwsAccountId,
        productCode: 'prod-test',
        customerAwsAccountId: BUYER.customerAwsAccountId,
        licenseArn: BUYER.licenseArn,
        status: 'subscribed',
        changed: true,
      },
    });
    const reused = await post({ token: genuine, tenant: 'evil-corp' });
    expect([reused.status, reused.body.error]).toEqual([409, 'handoff_token_reused']);
    // Another buyer cannot take a tenant id already linked.
    const taken = await post({ token: token(OTHER), tenant: 'acme-corp' });
    expect([taken.status, taken.body.error]).toEqual([409, 'tenant_taken']);

    // The CLI: forged, expired and bad tenant ids are refused before anything is linked.
    const env = { ...tp.env, KAFKA_BROKERS: '' };
    const link = (t: string, tenant: string) =>
      cli(['customers', 'link', '--token', t, '--tenant', tenant], env);
    const cliForged = await link(token(OTHER, { secret: 'z'.repeat(40) }), 'globex');
    expect([cliForged.code, cliForged.stderr]).toEqual([
      1,
      expect.stringContaining('[handoff_token_invalid]'),
    ]);
    const cliExpired = await link(token(OTHER, { nowMs: Date.now() - 2 * HOUR_MS }), 'globex');
    expect([cliExpired.code, cliExpired.stderr]).toEqual([
      1,
      expect.stringContaining('[handoff_token_expired]'),
    ]);
    expect((await link(token(OTHER), 'glo\u0007bex')).code).toBe(2);
    const other = token(OTHER);
    const cliLinked = await link(other, 'globex');
    expect(cliLinked.code).toBe(0);
    expect(JSON.parse(cliLinked.stdout)).toMatchObject({ tenant: 'globex', changed: true });
    const cliReused = await link(other, 'globex-2');
    expect([cliReused.code, cliReused.stderr]).toEqual([
      1,
      expect.stringContaining('[handoff_token_reused]'),
    ]);
    expect(await tenants()).toEqual({
      [BUYER.customerAwsAccountId]: 'acme-corp',
      [OTHER.customerAwsAccountId]: 'globex',
    });
    // The buyer registers again (a new token from AWS Marketplace): it stays under the linked id.
    const again = await directory.register(BUYER.customerAwsAccountId, BUYER, now());
    expect(again.tenant).toBe('acme-corp');
    expect((await directory.subscriptions()).map((e) => e.tenant).sort()).toEqual(['acme-corp', 'globex']);

    // Usage under the seller's own tenant ids is billed to the linked AWS identities, with their licenses.
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    const events: RawEvent[] = [
      { id: `${tp.run}-0`, customer: 'acme-corp', dimension: 'api_calls', quantity: 11 },
      { id: `${tp.run}-1`, customer: 'globex', dimension: 'api_calls', quantity: 13 },
    ].map((e) => ({ ...e, timestamp: new Date(H + 5 * 60_000).toISOString() }));
    await producer.send({
      topic: tp.topics.usage,
      acks: -1,
      messages: events.map((e) => ({
        key: String(e.customer),
        value: JSON.stringify(e),
        timestamp: String(now()),
      })),
    });
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    setClock(H + HOUR_MS + 60_000);
    const key = (c: typeof BUYER) => `${c.customerAwsAccountId}|api_calls|${hourIso(H)}`;
    await waitFor(() => (acceptedAtAws(emulator).size >= 2 ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `accepted: ${[...acceptedAtAws(emulator).keys()]}`,
    });
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({ [key(BUYER)]: 11, [key(OTHER)]: 13 });
    const licenses = emulator.state.snapshot().records.map((r) => [r.customer, r.licenseArn]);
    expect(licenses.sort()).toEqual([
      [BUYER.customerAwsAccountId, BUYER.licenseArn],
      [OTHER.customerAwsAccountId, OTHER.licenseArn],
    ]);
  }, 180_000);
});
