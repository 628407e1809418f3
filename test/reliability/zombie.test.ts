/**
 * A zombie writer: instance A is paused in the middle of a batch while the group rebalances the partition
 * to instance B. When A wakes up, its write is refused by the fencing token, and the sums stay exact.
 *
 * The zombie writes in the one window where only the fence can stop it: B has claimed the partition but
 * has not written yet, so Redis's checkpoint is still the one A holds (once B has written, the checkpoint
 * check alone would refuse A). Without fencing, A's batch lands there and B's is skipped as "already
 * applied": the test sees that as the zombie's write landing, and fails.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { recordId } from '../../src/metering/submission-record.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import { frozenRecords, readAllMessages, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
// The hour must not close on idleness between the two batches (a slow producer connect): 10 s, not 2 s.
const tp = testPipeline('zombie', { partitions: 1, env: { METERLINE_IDLE_TIMEOUT: '10s' } });
const running: RunningPipeline[] = [];
const holds: (() => void)[] = [];

afterAll(async () => {
  // A failed run may leave an instance held mid-batch: let it go, or it could not stop.
  for (const release of holds) release();
  for (const p of running) await p.stop();
  await tp.cleanup(kafka);
});

/** A test seam that holds an instance right before it writes its next batch (once armed), until released. */
function pauser() {
  let armed = false;
  let holding = false;
  const released = Promise.withResolvers<void>();
  holds.push(() => released.resolve());
  return {
    arm: () => {
      armed = true;
    },
    holding: () => (holding ? true : undefined),
    release: () => released.resolve(),
    hook: async () => {
      if (!armed) return;
      armed = false;
      holding = true;
      await released.promise;
    },
  };
}

describe('a zombie processor', () => {
  it('is fenced out after a rebalance: its late write is refused, and nothing is counted twice', async () => {
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
    const first = batch(0, 100);
    const second = batch(100, 50);
    // Ground truth, from what was produced: the units of distinct event ids in the hour.
    const distinct = new Map([...first, ...second].map((e) => [e.id, e]));
    const truth = [...distinct.values()]
      .filter((e) => Math.floor(Date.parse(e.timestamp) / HOUR_MS) * HOUR_MS === hour)
      .reduce((sum, e) => sum + e.quantity, 0);
    expect(truth).toBe(150);

    // Already on the topic when A starts: A's first punctuation sees a backlog, not an idle topic whose
    // watermark follows the wall clock (which would close this two-hour-old hour at once).
    await produceMessages(first.map(eventMessage), { kafka, topic: tp.topics.usage });
    const pauseA = pauser();
    const a = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
      beforeCommit: pauseA.hook,
    });
    running.push(a);
    await waitFor(() => ((a.processor?.stats.applied ?? 0) >= first.length ? true : undefined));

    // A takes the next batch and stops right before writing it.
    pauseA.arm();
    await produceMessages(second.map(eventMessage), { kafka, topic: tp.topics.usage });
    await waitFor(pauseA.holding, { describe: () => 'A holds its next batch' });

    // B joins; A cannot answer the rebalance while paused, so the group hands the partition to B. B claims
    // it (a new fencing token) and is held right before its own first write.
    const pauseB = pauser();
    pauseB.arm();
    const b = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
      beforeCommit: pauseB.hook,
    });
    running.push(b);
    await waitFor(pauseB.holding, { timeoutMs: 90_000, describe: () => 'B holds its first batch' });

    // A wakes up and writes the batch it holds, with the checkpoint Redis still has: only the fence is left
    // to refuse it. Wait until its attempt is over, whatever its outcome.
    const aApp = a.processor?.app;
    const aStats = a.processor?.stats;
    if (!aApp || !aStats) throw new Error('A runs no processor');
    const settled = () =>
      aApp.stats.fencedBatches +
        aApp.stats.replyLost +
        aApp.stats.stateLosses +
        aApp.stats.redelivered +
        (aStats.applied - first.length) >
      0
        ? true
        : undefined;
    pauseA.release();
    await waitFor(settled, { timeoutMs: 30_000, describe: () => `zombie A: ${JSON.stringify(aApp.stats)}` });
    // The zombie was fenced: none of its batch counted, and it did not take its refusal for a lost reply.
    expect.soft(aStats.applied, 'events the zombie applied').toBe(first.length);
    expect.soft(aApp.stats, "the zombie's outcome").toMatchObject({ fencedBatches: 1, replyLost: 0 });

    // B, the owner, writes the batch itself: all 50 events are counted by B's write.
    pauseB.release();
    const bStats = b.processor?.stats;
    const bApp = b.processor?.app;
    if (!bStats || !bApp) throw new Error('B runs no processor');
    await waitFor(
      () => (bStats.applied + bApp.stats.replyLost + bApp.stats.fencedBatches > 0 ? true : undefined),
      { timeoutMs: 30_000, describe: () => `owner B: ${JSON.stringify(bApp.stats)}` },
    );
    expect.soft(bStats.applied, 'events the owner applied').toBe(second.length);
    expect.soft(bApp.stats.replyLost, 'owner batches found already applied by someone else').toBe(0);

    // The hour closes (the partition goes idle) with exactly the units produced, in one record.
    const id = recordId('prod-test', 'acme', 'api_calls', hour);
    const records = await waitFor(async () => {
      const r = frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
      return r.has(id) ? r : undefined;
    });
    expect([...records.keys()]).toEqual([id]);
    expect(records.get(id)?.quantity).toBe(truth);
  });
});
