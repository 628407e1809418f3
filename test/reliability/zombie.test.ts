/**
 * A zombie writer: instance A is paused in the middle of a batch while the group rebalances the partition
 * to instance B. When A wakes up, its write is refused by the fencing token, and the sums stay exact.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { recordId } from '../../src/commit/submission-record.ts';
import { type RunningPipeline, startPipeline } from '../../src/pipeline.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import { frozenRecords, readAllMessages, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
// The hour must not close on idleness between the two batches (a slow producer connect): 10 s, not 2 s.
const tp = testPipeline('zombie', { partitions: 1, env: { METERLINE_IDLE_TIMEOUT: '10s' } });
const running: RunningPipeline[] = [];

afterAll(async () => {
  for (const p of running) await p.stop();
  await tp.cleanup(kafka);
});

describe('a zombie processor', () => {
  it('is fenced out after a rebalance, and nothing is counted twice', async () => {
    await tp.createTopics(kafka);
    const hour = hourStart(Date.now()) - 2 * HOUR_MS;
    const batch = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({
        id: `e${from + i}`,
        customer: 'acme',
        dimension: 'api_calls',
        quantity: 1,
        timestamp: new Date(hour + (from + i) * 1000).toISOString(),
      }));

    // Already on the topic when A starts: A's first punctuation sees a backlog, not an idle topic whose
    // watermark follows the wall clock (which would close this two-hour-old hour at once).
    await produceMessages(batch(0, 100).map(eventMessage), { kafka, topic: tp.topics.usage });
    let pauseNext = false;
    let paused: (() => void) | undefined;
    const reachedPause = Promise.withResolvers<void>();
    const a = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
      beforeCommit: async () => {
        if (!pauseNext) return;
        pauseNext = false;
        reachedPause.resolve();
        await new Promise<void>((resume) => {
          paused = resume;
        });
      },
    });
    running.push(a);
    await waitFor(() => ((a.processor?.stats.applied ?? 0) >= 100 ? true : undefined));

    // A takes the next batch and stops right before writing it.
    pauseNext = true;
    await produceMessages(batch(100, 50).map(eventMessage), { kafka, topic: tp.topics.usage });
    await reachedPause.promise;

    // B joins; A cannot answer the rebalance while paused, so the group hands the partition to B.
    const b = await startPipeline(tp.config(['processor']), testLogger(), { processor: true, worker: false });
    running.push(b);
    await waitFor(() => ((b.processor?.stats.applied ?? 0) >= 50 ? true : undefined), { timeoutMs: 90_000 });

    // A wakes up and tries to write the batch B already applied.
    paused?.();
    await waitFor(() => ((a.processor?.app.stats.fencedBatches ?? 0) >= 1 ? true : undefined), {
      timeoutMs: 30_000,
    });
    expect(a.processor?.stats.applied).toBe(100);

    // The hour closes (the partition goes idle) with exactly 150 units, emitted by B.
    const id = recordId('prod-test', 'acme', 'api_calls', hour);
    const records = await waitFor(async () => {
      const r = frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
      return r.has(id) ? r : undefined;
    });
    expect(records.get(id)?.quantity).toBe(150);
  });
});
