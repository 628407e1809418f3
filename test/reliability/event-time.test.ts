/**
 * Event time on the real broker and Redis: an idle partition does not stall its neighbours' hours, and
 * a late event never produces a second record for a finalized hour.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer } from 'kafkajs';
import { afterEach, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import { createRedis } from '../../src/redis/client.ts';
import { aggregateField, Keys } from '../../src/redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { frozenRecords, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
let pipeline: RunningPipeline | undefined;
let producer: Producer | undefined;
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await pipeline?.stop();
  pipeline = undefined;
  await producer?.disconnect();
  producer = undefined;
  for (const c of cleanups.splice(0)) await c();
});

async function setUp(tp: TestPipeline): Promise<Producer> {
  await tp.createTopics(kafka);
  cleanups.push(() => tp.cleanup(kafka));
  producer = kafka.producer();
  await producer.connect();
  pipeline = await startPipeline(tp.config(['processor']), testLogger(), { processor: true, worker: false });
  return producer;
}

const event = (id: string, customer: string, timestamp: number, quantity = 1) =>
  JSON.stringify({ id, customer, dimension: 'api_calls', quantity, timestamp });

/** A customer name whose key hashes to the partition. */
function customerOn(partition: number, partitions: number): string {
  for (let i = 0; ; i++) if (partitionOfCustomer(`c${i}`, partitions) === partition) return `c${i}`;
}

async function records(tp: TestPipeline) {
  return frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
}

describe('an idle partition', () => {
  it('stops holding the watermark back, so its neighbours and its own hours close', async () => {
    const idleMs = 3_000;
    const tp = testPipeline('idle', {
      tenants: [0, 1, 2].map((partition) => customerOn(partition, 3)),
      env: { METERLINE_IDLE_TIMEOUT: `${idleMs}ms` },
    });
    const p = await setUp(tp);
    const last = hourStart(Date.now()) - HOUR_MS;
    // One customer per partition: a customer's events are counted on the partition its key hashes to.
    const c = [0, 1, 2].map((partition) => customerOn(partition, 3)) as [string, string, string];
    // Every event sent, as (customer, event time): the ground truth of what each hour must bill.
    const sent: { customer: string; at: number }[] = [];
    const send = async (messages: { partition: number; id: string; at: number }[]) => {
      await p.send({
        topic: tp.topics.usage,
        messages: messages.map((m) => {
          const customer = c[m.partition] as string;
          return { partition: m.partition, key: customer, value: event(m.id, customer, m.at) };
        }),
      });
      for (const m of messages) sent.push({ customer: c[m.partition] as string, at: m.at });
    };
    // Partition 2 sees one event early in the last closed hour, then nothing: its event time stalls there.
    await send([{ partition: 2, id: 'p2-a', at: last + 600_000 }]);
    await waitFor(() => ((pipeline?.processor?.stats.applied ?? 0) >= 1 ? true : undefined));
    // From here on partition 2 is quiet: it counts as idle once the timeout has passed.
    const idleFrom = Date.now() + idleMs;
    await send([0, 1].map((partition) => ({ partition, id: `p${partition}-a`, at: last + 1_800_000 })));
    // Partition 0 keeps receiving current usage. Partition 1 is active too, but works through a backlog of
    // the last hour (a producer catching up): its event time is still inside that hour, so the hour must
    // stay open for it after partition 2 went idle, and every one of those events must count in it.
    let behind = true;
    let backlogAfterIdle = 0;
    let ticking = true;
    const ticker = (async () => {
      for (let i = 0; ticking; i++) {
        const p1At = behind ? last + 2_400_000 + i * 1_000 : Date.now();
        await send([
          { partition: 0, id: `t0-${i}`, at: Date.now() },
          { partition: 1, id: `t1-${i}`, at: p1At },
        ]);
        if (behind && Date.now() > idleFrom && ++backlogAfterIdle >= 10) behind = false;
        await sleep(300);
      }
    })();
    try {
      // Partition 1 has sent its whole backlog (10 events of it after partition 2 went idle), and the last
      // hour has closed on all three partitions.
      const closed = await waitFor(
        async () => {
          if (behind) return undefined;
          const r = await records(tp);
          return c.every((name) => r.has(`prod-test|${name}|api_calls|${hourIso(last)}`)) ? r : undefined;
        },
        { timeoutMs: 60_000, describe: () => 'hours of all three partitions closed' },
      );
      // Each partition's last hour bills exactly what was sent for it: the idle partition's event, and all
      // of the backlog, including what arrived after partition 2 went idle.
      const billed = Object.fromEntries(
        c.map((name) => [name, closed.get(`prod-test|${name}|api_calls|${hourIso(last)}`)?.quantity]),
      );
      const truth = Object.fromEntries(
        c.map((name) => [
          name,
          sent.filter((e) => e.customer === name && Math.floor(e.at / HOUR_MS) * HOUR_MS === last).length,
        ]),
      );
      expect.soft(billed).toEqual(truth);
      // No event reached an hour that had closed before it: none was carried forward or dead-lettered.
      expect.soft(pipeline?.processor?.stats.carriedLate, 'events carried forward').toBe(0);
      expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
    } finally {
      ticking = false;
      await ticker;
    }
  });
});

describe('a late event', () => {
  it('is carried into the open hour; the finalized hour never gets a second record', async () => {
    const tp = testPipeline('late');
    const p = await setUp(tp);
    const { old, id } = await finalizeAnHour(tp, p);

    await sendLate(tp, p, old);
    await waitFor(() => ((pipeline?.processor?.stats.carriedLate ?? 0) >= 1 ? true : undefined));
    const open = hourStart(Date.now());
    const redis = createRedis(stackEnv().redisUrl);
    try {
      const partition = await partitionOf(tp, 'acme');
      const k = new Keys(tp.run).partition({ topic: tp.topics.usage, partition });
      expect(await redis.hget(k.aggregates(open), aggregateField('acme', 'api_calls'))).toBe('5000000');
      expect(await redis.lrange(k.lateAudit(), 0, -1)).toEqual([
        `late-1|${aggregateField('acme', 'api_calls')}|${old}|${open}`,
      ]);
    } finally {
      redis.disconnect();
    }
    const submitted = await readAllMessages(kafka, tp.topics.submissions);
    expect(submitted.map((m) => JSON.parse(String(m.value)).recordId)).toEqual([id]);
    expect((await records(tp)).get(id)?.quantity).toBe(3);
  });

  it('goes to the DLQ as late_event under the dead-letter policy', async () => {
    const tp = testPipeline('late-dlq', { env: { METERLINE_LATE_POLICY: 'dead-letter' } });
    const p = await setUp(tp);
    const { old, id } = await finalizeAnHour(tp, p);
    await sendLate(tp, p, old);
    const [dead] = await waitFor(async () => {
      const failed = await readAllMessages(kafka, tp.topics.failed);
      return failed.length ? failed.map((m) => JSON.parse(String(m.value)) as FailedRecord) : undefined;
    });
    expect(dead).toMatchObject({ stage: 'ingest', reason: 'late_event', source: { key: 'acme' } });
    expect(pipeline?.processor?.stats.carriedLate).toBe(0);
    const submitted = await readAllMessages(kafka, tp.topics.submissions);
    expect(submitted.map((m) => JSON.parse(String(m.value)).recordId)).toEqual([id]);
  });
});

/** Sends 3 units for acme two hours ago and waits until that hour is finalized and emitted. */
async function finalizeAnHour(tp: TestPipeline, p: Producer): Promise<{ old: number; id: string }> {
  const old = hourStart(Date.now()) - 2 * HOUR_MS;
  await p.send({
    topic: tp.topics.usage,
    messages: [{ key: 'acme', value: event('e1', 'acme', old + 60_000, 3) }],
  });
  const id = `prod-test|acme|api_calls|${hourIso(old)}`;
  await waitFor(async () => ((await records(tp)).has(id) ? true : undefined));
  return { old, id };
}

/** 5 more units for that finalized hour. */
function sendLate(tp: TestPipeline, p: Producer, old: number) {
  return p.send({
    topic: tp.topics.usage,
    messages: [{ key: 'acme', value: event('late-1', 'acme', old + 120_000, 5) }],
  });
}

async function partitionOf(tp: TestPipeline, key: string): Promise<number> {
  const consumer = kafka.consumer({ groupId: `${tp.run}-probe` });
  await consumer.connect();
  await consumer.subscribe({ topic: tp.topics.usage, fromBeginning: true });
  const found = await new Promise<number>((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        if (message.key?.toString() === key) resolve(partition);
      },
    });
  });
  await consumer.disconnect();
  return found;
}
