/**
 * Usage written by a transactional producer: commit markers and aborted records leave gaps in the offsets.
 * Aborted events are never counted, every committed event is, exactly once, and the processor catches up
 * to the end of every partition (no lag left behind a marker or an aborted transaction at the end).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { metrics } from '../../src/observability/metrics.ts';
import { eventMessage } from '../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../src/produce/synthetic.ts';
import { testKafka, testLogger, uniqueId, waitFor } from '../support/harness.ts';
import {
  expectedFrozen,
  type TestPipeline,
  testPipeline,
  waitForFrozen,
  wrongRecords,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const TRANSACTIONS = 50;

describe('a transactional producer on the usage topic', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await tp?.cleanup(kafka);
  });

  it('counts committed events once, never aborted ones, and leaves no lag', async () => {
    tp = testPipeline('txn-input', {
      partitions: 3,
      tenants: Array.from({ length: 60 }, (_, i) => `tenant-${i}`),
    });
    await tp.createTopics(kafka);
    const events = [
      ...syntheticEvents({
        count: TRANSACTIONS * 200,
        customers: Array.from({ length: 60 }, (_, i) => `tenant-${i}`),
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: Date.now(),
        seed: 7,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));

    const producer = kafka.producer({
      transactionalId: uniqueId('txn'),
      idempotent: true,
      maxInFlightRequests: 1,
    });
    await producer.connect();
    const committed: RawEvent[] = [];
    const aborted = new Set<string>();
    try {
      for (let t = 0; t < TRANSACTIONS; t++) {
        const chunk = events.slice(t * 200, (t + 1) * 200);
        const tx = await producer.transaction();
        await tx.send({ topic: tp.topics.usage, messages: chunk.map(eventMessage) });
        // One transaction in five is aborted, the last one among them.
        if (t % 5 === 4) {
          await tx.abort();
          for (const e of chunk) aborted.add(e.id);
        } else {
          await tx.commit();
          committed.push(...chunk);
        }
      }
    } finally {
      await producer.disconnect();
    }
    expect(aborted.size).toBe(TRANSACTIONS * 40);
    // The backlog is read after it was written, so no hour closes before its events arrive (those would be
    // carried into the open hour, by design).
    pipeline = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
    });

    const truth = expectedFrozen(committed);
    const usage = tp.topics.usage;
    const billed = await waitForFrozen(kafka, tp.topics.submissions, truth, { timeoutMs: 180_000 });
    expect(wrongRecords(billed, truth)).toEqual([]);
    expect(billed).toEqual(truth);

    // Caught up to the log end of every partition: the group's lag and the processor's own gauge are 0.
    const admin = kafka.admin();
    await admin.connect();
    try {
      const ends = new Map((await admin.fetchTopicOffsets(usage)).map((o) => [o.partition, o.high]));
      const groupId = tp.env.METERLINE_PROCESSOR_GROUP as string;
      await waitFor(
        async () => {
          const [t] = await admin.fetchOffsets({ groupId, topics: [usage] });
          const behind = (t?.partitions ?? []).filter((p) => p.offset !== ends.get(p.partition));
          return t?.partitions.length === 3 && !behind.length ? true : undefined;
        },
        { timeoutMs: 60_000, describe: () => `group offsets behind ${JSON.stringify([...ends])}` },
      );
      await waitFor(
        async () => {
          const lag = (await metrics.processorLag.get()).values;
          return lag.length === 3 && lag.every((v) => v.value === 0) ? true : undefined;
        },
        {
          timeoutMs: 60_000,
          describe: async () => `processor lag ${JSON.stringify((await metrics.processorLag.get()).values)}`,
        },
      );
    } finally {
      await admin.disconnect();
    }
  }, 400_000);
});
