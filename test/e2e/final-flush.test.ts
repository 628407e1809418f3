/**
 * The final flush. After unsubscribe-pending AWS takes a buyer's last records for about an hour only, so
 * that buyer's open hour cannot wait for the partition's schedule (hour end + grace). On a simulated
 * clock: two registered buyers use the product in the first minutes of an hour; at minute 5 one of them
 * unsubscribes. Its partial hour must be accepted long before minute 5 of the next hour, while the other
 * buyer's hour closes on the normal schedule; usage of the leaving buyer after its cut goes to the next
 * hour, which is closed early too while AWS still takes its records. Every record once, with the truth.
 * A buyer of two products who leaves one of them: that product's hour closes early, the other's keeps its
 * schedule.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  acceptedAtAws,
  frozenRecords,
  readAllMessages,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';
import { appliedMessages, twoProductBuyer, twoProductPlan } from '../support/two-products.ts';

const kafka = testKafka();
const LEAVING = {
  customerAwsAccountId: '555555555555',
  licenseArn: 'arn:aws:license-manager::555555555555:license:l-l5',
};
const STAYING = {
  customerAwsAccountId: '666666666666',
  licenseArn: 'arn:aws:license-manager::666666666666:license:l-s6',
};

describe('unsubscribe-pending', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it("closes the leaving buyer's hour at once, for it alone, and bills each hour once", async () => {
    const H = hourStart(Date.now()) - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 60_000);
    const emulator: RunningEmulator = await startEmulator({
      customers: [LEAVING, STAYING].map((c) => ({ id: c.customerAwsAccountId, licenseArn: c.licenseArn })),
      now,
    });
    stops.push(() => emulator.close());
    tp = testPipeline('flush', {
      customers: {},
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    await tp.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const directory = new CustomerDirectory(redis, new Keys(tp.run));
    await directory.register('leaving', { productCode: 'prod-test', ...LEAVING }, now());
    await directory.register('staying', { productCode: 'prod-test', ...STAYING }, now());

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    let n = 0;
    const produce = async (customer: string, minute: number, quantity: number) => {
      const e: RawEvent = {
        id: `${tp?.run}-${n++}`,
        customer,
        dimension: 'api_calls',
        quantity,
        timestamp: new Date(H + minute * 60_000).toISOString(),
      };
      await producer.send({
        topic: tp?.topics.usage as string,
        acks: -1,
        messages: [{ key: customer, value: JSON.stringify(e), timestamp: String(now()) }],
      });
    };
    for (let minute = 1; minute <= 4; minute++) {
      await produce('leaving', minute, minute);
      await produce('staying', minute, 10 * minute);
    }
    setClock(H + 4 * 60_000 + 30_000);
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    const applied = async () => ((await appliedMessages(pipeline)) >= n ? true : undefined);
    await waitFor(applied, { describe: () => 'the first minutes are not applied yet' });

    // Minute 5: the leaving buyer's subscription ends.
    setClock(H + 5 * 60_000);
    const pendingAt = now();
    await directory.applyStatus({ ...LEAVING, productCode: 'prod-test' }, 'unsubscribe-pending', pendingAt);
    const key = (c: { customerAwsAccountId: string }, hour: number) =>
      `${c.customerAwsAccountId}|api_calls|${hourIso(hour)}`;
    await waitFor(() => (acceptedAtAws(emulator).has(key(LEAVING, H)) ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => "the leaving buyer's partial hour is not accepted yet",
    });
    // Accepted inside AWS's hour after unsubscribe-pending, with its usage so far; the other buyer's hour
    // is still open, as its schedule says.
    expect(now()).toBeLessThan(pendingAt + HOUR_MS);
    expect(acceptedAtAws(emulator).get(key(LEAVING, H))).toBe(1 + 2 + 3 + 4);
    expect(acceptedAtAws(emulator).has(key(STAYING, H))).toBe(false);

    // The leaving buyer still uses the product a little (minute 6): that goes to the next hour.
    setClock(H + 6 * 60_000);
    await produce('leaving', 6, 7);
    await produce('staying', 6, 60);
    await waitFor(applied, { describe: () => 'minute 6 is not applied yet' });
    setClock(H + HOUR_MS + 60_000);
    await waitFor(
      () =>
        acceptedAtAws(emulator).has(key(STAYING, H)) && acceptedAtAws(emulator).has(key(LEAVING, H + HOUR_MS))
          ? true
          : undefined,
      { timeoutMs: 60_000, describe: () => `accepted: ${[...acceptedAtAws(emulator).keys()]}` },
    );
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({
      [key(LEAVING, H)]: 10,
      [key(LEAVING, H + HOUR_MS)]: 7,
      [key(STAYING, H)]: 10 + 20 + 30 + 40 + 60,
    });
    expect(emulator.state.snapshot().duplicates).toBe(0);
    // Every record id once on the submission topic (or again with the same quantity).
    const submitted = frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
    expect(submitted.size).toBe(3);
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
  }, 300_000);

  it('closes the hour early for the product the buyer leaves only, when it keeps another', async () => {
    const H = hourStart(Date.now()) - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 60_000);
    const buyer = twoProductBuyer('565656565656', 'f');
    const ACCOUNT = buyer.account;
    const emulator: RunningEmulator = await startEmulator({ customers: buyer.emulatorCustomers, now });
    stops.push(() => emulator.close());
    const tp2 = testPipeline('flush2', {
      customers: {},
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_PLAN: twoProductPlan() },
    });
    stops.push(() => tp2.cleanup(kafka));
    await tp2.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const directory = new CustomerDirectory(redis, new Keys(tp2.run));
    await buyer.register(directory, 'prod-a', now());
    await buyer.register(directory, 'prod-b', now());

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    let n = 0;
    const produce = async (dimension: string, minute: number, quantity: number) => {
      const e: RawEvent = {
        id: `${tp2.run}-${n++}`,
        customer: ACCOUNT,
        dimension,
        quantity,
        timestamp: new Date(H + minute * 60_000).toISOString(),
      };
      await producer.send({
        topic: tp2.topics.usage,
        acks: -1,
        messages: [{ key: ACCOUNT, value: JSON.stringify(e), timestamp: String(now()) }],
      });
    };
    for (let minute = 1; minute <= 4; minute++) {
      await produce('a_calls', minute, minute);
      await produce('b_calls', minute, 10 * minute);
    }
    setClock(H + 4 * 60_000 + 30_000);
    const pipeline: RunningPipeline = await startPipeline(tp2.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    const applied = async () => ((await appliedMessages(pipeline)) >= n ? true : undefined);
    await waitFor(applied, { describe: () => 'the first minutes are not applied yet' });

    // Minute 5: AWS reports that the buyer is leaving product A; it keeps B.
    setClock(H + 5 * 60_000);
    const pendingAt = now();
    await directory.applyStatus(
      { customerAwsAccountId: ACCOUNT, productCode: 'prod-a' },
      'unsubscribe-pending',
      pendingAt,
    );
    const key = (dimension: string, hour: number) => `${ACCOUNT}|${dimension}|${hourIso(hour)}`;
    await waitFor(() => (acceptedAtAws(emulator).has(key('a_calls', H)) ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `product A's partial hour is not accepted yet: ${[...acceptedAtAws(emulator).keys()]}`,
    });
    expect(now()).toBeLessThan(pendingAt + HOUR_MS);
    expect(acceptedAtAws(emulator).get(key('a_calls', H))).toBe(1 + 2 + 3 + 4);
    // Product B's hour is still open, as its schedule says.
    expect(acceptedAtAws(emulator).has(key('b_calls', H))).toBe(false);

    // Minute 6: a little more of A (carried to A's next hour, closed early too) and of B (its own hour).
    setClock(H + 6 * 60_000);
    await produce('a_calls', 6, 7);
    await produce('b_calls', 6, 60);
    await waitFor(applied, { describe: () => 'minute 6 is not applied yet' });
    // The window state is lost (the directory stays): rebuilt from the changelog, A's cut with it, and the
    // partition replayed; A's first minutes must not count again in B's close or in A's next hour.
    const replaysBefore = pipeline.processor?.stats.replays ?? 0;
    const stateKeys = await redis.keys(`${tp2.run}:{${tp2.topics.usage}/*`);
    expect(stateKeys.length).toBeGreaterThan(0);
    await redis.del(...stateKeys);
    await waitFor(() => ((pipeline.processor?.stats.replays ?? 0) > replaysBefore ? true : undefined), {
      describe: () => 'the lost window state is not noticed yet',
    });
    await waitFor(applied, { describe: () => 'the replay is not done yet' });
    setClock(H + HOUR_MS + 60_000);
    await waitFor(
      () =>
        acceptedAtAws(emulator).has(key('b_calls', H)) &&
        acceptedAtAws(emulator).has(key('a_calls', H + HOUR_MS))
          ? true
          : undefined,
      { timeoutMs: 60_000, describe: () => `accepted: ${[...acceptedAtAws(emulator).keys()]}` },
    );
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({
      [key('a_calls', H)]: 10,
      [key('a_calls', H + HOUR_MS)]: 7,
      [key('b_calls', H)]: 10 + 20 + 30 + 40 + 60,
    });
    // Each record with its own product's license.
    const licenses = new Map(
      emulator.state.snapshot().records.map((r) => [`${r.dimension}|${r.timestamp}`, r.licenseArn]),
    );
    expect(licenses.get(`a_calls|${hourIso(H)}`)).toBe(buyer.license['prod-a']);
    expect(licenses.get(`b_calls|${hourIso(H)}`)).toBe(buyer.license['prod-b']);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(await readAllMessages(kafka, tp2.topics.failed)).toEqual([]);
  }, 300_000);
});
