/**
 * Event time on the real broker and Redis: an idle partition does not stall its neighbours' hours, and
 * a late event never produces a second record for a finalized hour.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer } from 'kafkajs';
import { afterEach, describe, expect, it } from 'vitest';
import type { FailedRecord } from '../../src/dlq/envelope.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import { type RunningPipeline, startPipeline } from '../../src/pipeline.ts';
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
    const tp = testPipeline('idle', { env: { METERLINE_IDLE_TIMEOUT: '3s' } });
    const p = await setUp(tp);
    const last = hourStart(Date.now()) - HOUR_MS;
    // One customer per partition: a customer's events are counted on the partition its key hashes to.
    const c = [0, 1, 2].map((partition) => customerOn(partition, 3));
    // Partition 2 sees one event early in the last closed hour, then nothing: its event time stalls there.
    await p.send({
      topic: tp.topics.usage,
      messages: [{ partition: 2, key: c[2], value: event('p2-a', c[2] as string, last + 600_000) }],
    });
    await p.send({
      topic: tp.topics.usage,
      messages: [0, 1].map((partition) => ({
        partition,
        key: c[partition],
        value: event(`p${partition}-a`, c[partition] as string, last + 1_800_000),
      })),
    });
    // Partitions 0 and 1 keep receiving current usage, so they stay active and their event time is now.
    let ticking = true;
    const ticker = (async () => {
      for (let i = 0; ticking; i++) {
        await p.send({
          topic: tp.topics.usage,
          messages: [0, 1].map((partition) => ({
            partition,
            key: c[partition],
            value: event(`t${partition}-${i}`, c[partition] as string, Date.now()),
          })),
        });
        await sleep(300);
      }
    })();
    try {
      const closed = await waitFor(
        async () => {
          const r = await records(tp);
          return c.every((name) => r.has(`prod-test|${name}|api_calls|${hourIso(last)}`)) ? r : undefined;
        },
        { timeoutMs: 60_000, describe: () => 'hours of all three partitions closed' },
      );
      expect([...closed.values()].map((r) => r.hour)).toEqual([hourIso(last), hourIso(last), hourIso(last)]);
      // Closed by the watermark: the wall-clock bound (12 h past the hour) is nowhere near.
      expect(Date.now()).toBeLessThan(last + HOUR_MS + 12 * HOUR_MS);
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
