/**
 * A total Redis loss with the defaults a user gets, over a day of usage: 26 hours of hourly, monthly
 * (seat peak) and contract-with-overage usage, part of it late beyond the grace (carried forward), the
 * first 20 hours already accepted by AWS, then FLUSHALL while a batch is in flight, with usage still
 * arriving. The pipeline runs on a simulated clock (the processor's, the worker's and the emulator's),
 * 26 hours in the past, one hour per step; Kafka holds each message at its simulated time.
 *
 * The truth is computed here from the events alone, never from the pipeline: per customer, the hourly
 * total, the month's seat peak and the overage above the entitlement. What AWS accepted must add up to
 * exactly that (every carried unit billed once, no peak and no entitlement billed twice), every record
 * id carries one quantity wherever it appears, and AWS answered DuplicateRecord 0 times (no hour was
 * frozen again with other usage). METERLINE_WINDOW_MAX_DELAY stays at its default.
 */
import type { Producer } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { type RawEvent, seededRandom } from '../../src/produce/synthetic.ts';
import { createRedis, type ScriptedRedis } from '../../src/redis/client.ts';
import { HOUR_MS, hourIso, hourStart, monthStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  frozenRecords,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';
import { startRedisServer } from '../support/redis-server.ts';
import { simulatedClock } from '../support/sim-clock.ts';

const HOURS = 26;
/** The step (hour) during which Redis is flushed: the 20 hours before it are accepted by then. */
const WIPE_AT = 20;
const ENTITLEMENT = 150;
const tenants = Object.keys(TEST_CUSTOMERS);
const kafka = testKafka();

/** Whole hours of simulated time, ending an hour before now and never across a month's start. */
function simulatedStart(): number {
  const end = hourStart(Date.now()) - HOUR_MS;
  const month = monthStart(end);
  const start = end - HOURS * HOUR_MS;
  return start < month && end > month ? month - HOURS * HOUR_MS - HOUR_MS : start;
}

describe('Redis wiped (FLUSHALL mid-batch) over a day of hourly, monthly and contract usage', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('bills every unit once: frozen hours reproduced, carried units once, no peak or entitlement twice', async () => {
    const S0 = simulatedStart();
    const { now, setClock } = simulatedClock(S0 + 50 * 60_000);

    const redisServer = await startRedisServer();
    stops.push(() => {
      redisServer.proc.kill('SIGKILL');
    });
    const redisUrl = `redis://127.0.0.1:${redisServer.port}`;
    const admin: ScriptedRedis = createRedis(redisUrl);
    stops.push(() => admin.disconnect());
    const emulator: RunningEmulator = await startEmulator({ customers: tenants.map(awsIdOf), now });
    stops.push(() => emulator.close());
    const contract = {
      start: '2026-01-01T00:00:00Z',
      period: 'month',
      entitlements: { storage: ENTITLEMENT },
    };
    tp = testPipeline('wipe-models', {
      dimensions: [
        { name: 'api_calls' },
        { name: 'seats', model: 'monthly', aggregation: 'max' },
        { name: 'storage', model: 'contract' },
      ],
      customers: Object.fromEntries(Object.entries(TEST_CUSTOMERS).map(([t, m]) => [t, { ...m, contract }])),
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        REDIS_URL: redisUrl,
        // The user's default: the harness's longer one would hide hours closed halfway through a replay.
        METERLINE_WINDOW_MAX_DELAY: '3h',
      },
    });
    await tp.createTopics(kafka);
    const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    const usageTopic = tp.topics.usage;
    const produced: RawEvent[] = [];
    /** Each message carries the simulated time it arrives at, as Kafka's timestamp. */
    const produce = async (events: RawEvent[], arrivalMs: number) => {
      await producer.send({
        topic: usageTopic,
        acks: -1,
        messages: events.map((e) => ({
          key: e.customer,
          value: JSON.stringify(e),
          timestamp: String(arrivalMs),
        })),
      });
      produced.push(...events);
    };

    let wipeArmed = false;
    let wiped = false;
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
      // FLUSHALL with a batch in flight: decoded and about to be committed.
      beforeCommit: async () => {
        if (!wipeArmed) return;
        wipeArmed = false;
        await admin.flushall();
        wiped = true;
      },
    });
    stops.push(() => pipeline.stop());
    const running = pipeline;

    const kadmin = kafka.admin();
    await kadmin.connect();
    stops.push(() => kadmin.disconnect());
    /** Every partition's input is applied (the task's checkpoint is at the log end). */
    const applied = async (): Promise<true | undefined> => {
      const ends = await kadmin.fetchTopicOffsets(usageTopic);
      const tasks = (await running.processor?.app.tasks()) ?? [];
      for (const o of ends) {
        if (BigInt(o.high) === 0n) continue;
        const task = tasks.find((t) => t.id.partition === o.partition);
        const ckpt = task?.restorePoint.checkpoint;
        if (ckpt === undefined || ckpt + 1n < BigInt(o.high)) return undefined;
      }
      return true;
    };

    const random = seededRandom(26);
    const int = (max: number) => 1 + Math.floor(random() * max);
    let n = 0;
    const event = (customer: string, dimension: string, hourMs: number, quantity: number): RawEvent => ({
      id: `${tp?.run}-${n++}`,
      customer,
      dimension,
      quantity,
      timestamp: new Date(hourMs + Math.floor(random() * 50 * 60_000)).toISOString(),
    });

    for (let i = 0; i < HOURS; i++) {
      const hour = S0 + i * HOUR_MS;
      setClock(hour + 50 * 60_000);
      const onTime: RawEvent[] = [];
      for (const customer of tenants) {
        for (let k = 0; k < 3; k++) onTime.push(event(customer, 'api_calls', hour, int(5)));
        // The seat count grows through the day, so new peaks come after the wipe too.
        for (let k = 0; k < 2; k++) onTime.push(event(customer, 'seats', hour, int(5 + 2 * i)));
        for (let k = 0; k < 3; k++) onTime.push(event(customer, 'storage', hour, int(10)));
      }
      // Producers resend: the same id with the same content.
      const resent = [onTime[int(onTime.length) - 1], onTime[int(onTime.length) - 1]] as RawEvent[];
      // Late beyond the grace: usage of the hour before last, which closed an hour ago.
      const late: RawEvent[] = [];
      if (i >= 2) {
        for (const customer of tenants) {
          late.push(event(customer, 'api_calls', hour - 2 * HOUR_MS, int(5)));
          late.push(event(customer, 'storage', hour - 2 * HOUR_MS, int(10)));
          late.push(event(customer, 'seats', hour - 2 * HOUR_MS, int(5 + 2 * i)));
        }
      }
      if (i === WIPE_AT) wipeArmed = true;
      await produce(late, hour + 50 * 60_000);
      await produce([...onTime, ...resent], hour + 50 * 60_000);
      if (i === WIPE_AT) {
        await waitFor(() => (wiped && (running.processor?.stats.replays ?? 0) >= 1 ? true : undefined), {
          timeoutMs: 60_000,
          describe: () => `wiped: ${wiped}, replays: ${running.processor?.stats.replays}`,
        });
      }
      await waitFor(applied, { timeoutMs: 60_000, describe: () => `hour ${i}: input not applied yet` });
      // The hour ends: every partition is idle, so the watermark follows the clock and closes it.
      setClock(hour + HOUR_MS + 60_000);
      const due = tenants.map((t) => `${awsIdOf(t)}|api_calls|${hourIso(hour)}`);
      await waitFor(() => (due.every((k) => acceptedAtAws(emulator).has(k)) ? true : undefined), {
        timeoutMs: 60_000,
        describe: () =>
          `hour ${i} (${hourIso(hour)}) not accepted yet: ${due.filter((k) => !acceptedAtAws(emulator).has(k))}`,
      });
    }

    // The truth, from the events alone.
    const distinct = new Map(produced.map((e) => [e.id, e]));
    const truth = new Map<string, number>();
    const add = (key: string, q: number, how: 'sum' | 'max') =>
      truth.set(key, how === 'sum' ? (truth.get(key) ?? 0) + q : Math.max(truth.get(key) ?? 0, q));
    for (const e of distinct.values()) {
      add(`${awsIdOf(e.customer)}|${e.dimension}`, e.quantity, e.dimension === 'seats' ? 'max' : 'sum');
    }
    for (const t of tenants) {
      const key = `${awsIdOf(t)}|storage`;
      truth.set(key, Math.max(0, (truth.get(key) ?? 0) - ENTITLEMENT));
    }
    const billed = new Map<string, number>();
    for (const [key, q] of acceptedAtAws(emulator)) {
      const [customer, dimension] = key.split('|');
      billed.set(`${customer}|${dimension}`, (billed.get(`${customer}|${dimension}`) ?? 0) + q);
    }
    // Every record id carries one quantity wherever it appears (throws otherwise).
    frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(Object.fromEntries(billed)).toEqual(Object.fromEntries(truth));
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
    // The faults under test happened: usage was carried, Redis was lost, and the replay met frozen hours.
    const stats = running.processor?.stats;
    expect(stats?.carriedLate).toBeGreaterThan(0);
    expect(stats?.replays).toBeGreaterThanOrEqual(1);
    expect(stats?.replayCounted).toBeGreaterThan(0);
  }, 600_000);
});
