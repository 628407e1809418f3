/**
 * Usage of a tenant that has no AWS identity yet is held, not lost: buyers often finish registration
 * minutes after their first use. On a simulated clock (processor, worker and emulator): three hours of
 * usage for a mapped tenant, a tenant that registers 30 minutes after those hours closed, and one that
 * never registers. The mapped tenant is billed at once; the late registrant's records wait, frozen, and
 * are billed at their own hours with its license as soon as it is registered; the other's are
 * dead-lettered only at their deadline margin, saying how long they were held. A buyer registered for one
 * product is mapped for that product only: its usage of a second product is held until it registers that
 * one too.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { acceptanceDeadline } from '../../src/metering/aws-window.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';
import { twoProductBuyer, twoProductPlan } from '../support/two-products.ts';

const kafka = testKafka();
const ACME = {
  customerAwsAccountId: '111111111111',
  licenseArn: 'arn:aws:license-manager::111111111111:license:l-a1',
};
const NEWCO = {
  customerAwsAccountId: '444444444444',
  licenseArn: 'arn:aws:license-manager::444444444444:license:l-n4',
};
/** The default METERLINE_SUBMIT_MARGIN: held records are dead-lettered this long before their deadline. */
const MARGIN_MS = HOUR_MS;

describe('usage of a tenant without an AWS identity', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('is held until the tenant registers, then billed at its own hours; never registered, dead-lettered at the margin', async () => {
    const S0 = hourStart(Date.now()) - 30 * HOUR_MS;
    const { now, setClock } = simulatedClock(S0 + 50 * 60_000);
    const emulator: RunningEmulator = await startEmulator({
      customers: [
        { id: ACME.customerAwsAccountId, licenseArn: ACME.licenseArn },
        { id: NEWCO.customerAwsAccountId, licenseArn: NEWCO.licenseArn },
      ],
      now,
    });
    stops.push(() => emulator.close());
    tp = testPipeline('held', {
      customers: { acme: ACME },
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    const config = tp.config();
    expect(config.window.submitMarginMs).toBe(MARGIN_MS);
    await tp.createTopics(kafka);

    // Three hours of usage for each tenant, every message stamped with its simulated arrival time.
    const events: RawEvent[] = [];
    for (let h = 0; h < 3; h++) {
      for (const customer of ['acme', 'newco', 'ghost']) {
        for (let k = 0; k < 3; k++) {
          events.push({
            id: `${tp.run}-${customer}-${h}-${k}`,
            customer,
            dimension: 'api_calls',
            quantity: 1 + h + k,
            timestamp: new Date(S0 + h * HOUR_MS + k * 60_000).toISOString(),
          });
        }
      }
    }
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    await producer.send({
      topic: tp.topics.usage,
      acks: -1,
      messages: events.map((e) => ({
        key: e.customer,
        value: JSON.stringify(e),
        timestamp: String(Date.parse(String(e.timestamp)) + 30_000),
      })),
    });
    const truth = (customer: string) => {
      const out = new Map<string, number>();
      for (const e of events.filter((x) => x.customer === customer)) {
        const key = hourIso(hourStart(Date.parse(String(e.timestamp))));
        out.set(key, (out.get(key) ?? 0) + e.quantity);
      }
      return out;
    };
    const billedTo = (account: string) =>
      new Map(
        [...acceptedAtAws(emulator)]
          .filter(([k]) => k.startsWith(`${account}|`))
          .map(([k, q]) => [k.split('|')[2] as string, q]),
      );

    setClock(S0 + 2 * HOUR_MS + 55 * 60_000);
    const pipeline: RunningPipeline = await startPipeline(config, testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    // The three hours end: the mapped tenant is billed; the other two are held.
    setClock(S0 + 3 * HOUR_MS + 60_000);
    await waitFor(() => (billedTo(ACME.customerAwsAccountId).size === 3 ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `${billedTo(ACME.customerAwsAccountId).size} of acme's 3 hours billed`,
    });
    expect(billedTo(ACME.customerAwsAccountId)).toEqual(truth('acme'));
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const keys = new Keys(tp.run);
    const held = async () => {
      let n = 0;
      for (let partition = 0; partition < 3; partition++) {
        n += await redis.hlen(keys.partition({ topic: tp?.topics.usage as string, partition }).held());
      }
      return n;
    };
    await waitFor(async () => ((await held()) === 6 ? true : undefined), {
      describe: async () => `${await held()} of 6 records held`,
    });
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);

    // 30 minutes later, newco registers (as the registration URL would store it).
    setClock(S0 + 3 * HOUR_MS + 31 * 60_000);
    await new CustomerDirectory(redis, keys).register('newco', { productCode: 'prod-test', ...NEWCO }, now());
    await waitFor(() => (billedTo(NEWCO.customerAwsAccountId).size === 3 ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `${billedTo(NEWCO.customerAwsAccountId).size} of newco's 3 hours billed`,
    });
    expect(billedTo(NEWCO.customerAwsAccountId)).toEqual(truth('newco'));
    const newco = emulator.state.snapshot().records.filter((r) => r.customer === NEWCO.customerAwsAccountId);
    expect(newco.every((r) => r.licenseArn === NEWCO.licenseArn)).toBe(true);
    await waitFor(async () => ((await held()) === 3 ? true : undefined), {
      describe: async () => `${await held()} records held, ghost's 3 expected`,
    });

    // Ghost never registers: each of its hours is dead-lettered once its deadline margin is reached.
    const riskAt = (h: number) => acceptanceDeadline('BatchMeterUsage', S0 + h * HOUR_MS) - MARGIN_MS;
    setClock(riskAt(0) - 60_000);
    // Two commit ticks at that time (the second starts after the first one's hours are done): still held.
    const boundary = () => pipeline.processor?.commitStage.stats.closeBoundary ?? 0;
    const first = await waitFor(() => (boundary() >= riskAt(0) - 65_000 ? boundary() : undefined));
    await waitFor(() => (boundary() > first ? true : undefined));
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
    expect(await held()).toBe(3);
    setClock(riskAt(2) + 60_000);
    const dead = await waitFor(
      async () => {
        const m = (await readAllMessages(kafka, tp?.topics.failed as string)).map(
          (x) => JSON.parse(String(x.value)) as FailedRecord,
        );
        return m.length >= 3 ? m : undefined;
      },
      { timeoutMs: 60_000, describe: () => 'ghost is not dead-lettered yet' },
    );
    expect(dead).toHaveLength(3);
    for (const f of dead) {
      expect(f).toMatchObject({ stage: 'commit', reason: 'customer_mapping_missing', retriable: true });
      expect(f.record?.customer).toBe('ghost');
      expect(f.heldSince).toBeDefined();
      expect(f.detail).toMatch(/held \d+h \d+m from/);
    }
    expect(new Map(dead.map((f) => [f.record?.hour, f.record?.quantity]))).toEqual(truth('ghost'));
    await waitFor(async () => ((await held()) === 0 ? true : undefined));
    expect(emulator.state.snapshot().duplicates).toBe(0);
  }, 300_000);

  it("holds a buyer's usage of a product it has not registered for, while its other product is billed", async () => {
    const H = hourStart(Date.now()) - 5 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 50 * 60_000);
    const buyer = twoProductBuyer('343434343434', 'h');
    const ACCOUNT = buyer.account;
    const emulator: RunningEmulator = await startEmulator({ customers: buyer.emulatorCustomers, now });
    stops.push(() => emulator.close());
    const tp2 = testPipeline('held2', {
      partitions: 1,
      customers: {},
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_PLAN: twoProductPlan() },
    });
    stops.push(() => tp2.cleanup(kafka));
    await tp2.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const keys = new Keys(tp2.run);
    const directory = new CustomerDirectory(redis, keys);
    // Registered for product A only, so far.
    await buyer.register(directory, 'prod-a', now());

    const events: RawEvent[] = [1, 2, 3].flatMap((k) =>
      ['a_calls', 'b_calls'].map((dimension) => ({
        id: `${tp2.run}-${dimension}-${k}`,
        customer: ACCOUNT,
        dimension,
        quantity: dimension === 'a_calls' ? k : 10 * k,
        timestamp: new Date(H + k * 60_000).toISOString(),
      })),
    );
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    await producer.send({
      topic: tp2.topics.usage,
      acks: -1,
      messages: events.map((e) => ({
        key: ACCOUNT,
        value: JSON.stringify(e),
        timestamp: String(Date.parse(String(e.timestamp)) + 30_000),
      })),
    });
    const pipeline: RunningPipeline = await startPipeline(tp2.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    const key = (dimension: string) => `${ACCOUNT}|${dimension}|${hourIso(H)}`;
    setClock(H + HOUR_MS + 60_000);
    await waitFor(() => (acceptedAtAws(emulator).has(key('a_calls')) ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => "product A's hour is not billed yet",
    });
    const held = () => redis.hlen(keys.partition({ topic: tp2.topics.usage, partition: 0 }).held());
    await waitFor(async () => ((await held()) === 1 ? true : undefined), {
      describe: async () => `${await held()} records held, product B's one expected`,
    });
    expect(await readAllMessages(kafka, tp2.topics.failed)).toEqual([]);
    expect(acceptedAtAws(emulator).has(key('b_calls'))).toBe(false);

    // Twenty minutes later the buyer registers product B: its held hour goes out with B's license.
    setClock(H + HOUR_MS + 21 * 60_000);
    await buyer.register(directory, 'prod-b', now());
    await waitFor(() => (acceptedAtAws(emulator).has(key('b_calls')) ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => "product B's held hour is not billed yet",
    });
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({
      [key('a_calls')]: 1 + 2 + 3,
      [key('b_calls')]: 10 + 20 + 30,
    });
    const licenses = new Map(emulator.state.snapshot().records.map((r) => [r.dimension, r.licenseArn]));
    expect(licenses).toEqual(
      new Map([
        ['a_calls', buyer.license['prod-a']],
        ['b_calls', buyer.license['prod-b']],
      ]),
    );
    expect(emulator.state.snapshot().duplicates).toBe(0);
    await waitFor(async () => ((await held()) === 0 ? true : undefined));
    expect(await readAllMessages(kafka, tp2.topics.failed)).toEqual([]);
  }, 300_000);
});
