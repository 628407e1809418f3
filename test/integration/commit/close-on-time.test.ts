/**
 * An hour closes when it becomes closable, not at the commit stage's next interval tick: the stage looks
 * again at the instant the close rule predicts (close-boundary.ts `nextCloseAt`). The interval here is an
 * hour, so within this test only such a predicted look can freeze the hour; the stage's first look comes
 * with the partition assignment. The clock is simulated and runs at real speed.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { simulatedClock } from '../../support/sim-clock.ts';

const kafka = testKafka();
/** Wall time the setup has before the hour becomes closable (a join and a few events take a few s). */
const LEAD_MS = 20_000;

describe('the commit stage closes an hour when it becomes closable', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await tp?.cleanup(kafka);
  });

  it('freezes the hour at its close instant although the commit interval is an hour', async () => {
    tp = testPipeline('close-on-time', { env: { METERLINE_COMMIT_INTERVAL: '1h' } });
    const config = tp.config(['processor']);
    const { graceMs, maxOutOfOrdernessMs } = config.window;
    const hour = hourStart(Date.now()) - HOUR_MS;
    // Closable at end + grace + out-of-orderness once the partitions are idle (2 s after their last event).
    const closableAt = hour + HOUR_MS + graceMs + maxOutOfOrdernessMs;
    const clock = simulatedClock(closableAt - LEAD_MS);
    await tp.createTopics(kafka);
    pipeline = await startPipeline(config, testLogger(), { processor: true, worker: false, now: clock.now });
    const stage = () => pipeline?.processor?.commitStage.stats;
    // The look that comes with the assignment (the first with tasks sets a boundary): every partition
    // idle, it predicts the close instant.
    await waitFor(() => ((stage()?.closeBoundary ?? 0) > 0 ? true : undefined), {
      describe: () => `commit stage ${JSON.stringify(stage())}`,
    });
    const events = ['acme', 'globex', 'initech'].flatMap((customer, i) =>
      ['api_calls', 'jobs'].map((dimension, j) => ({
        id: `${tp?.run}-${i}-${j}`,
        customer,
        dimension,
        quantity: 1 + i + j,
        timestamp: new Date(hour + (i * 2 + j + 1) * 60_000).toISOString(),
      })),
    );
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    const stats = () => pipeline?.processor?.stats;
    await waitFor(() => ((stats()?.applied ?? 0) >= events.length ? true : undefined), {
      describe: () => `${stats()?.applied} of ${events.length} events applied`,
    });
    // The premise: everything was in place before the hour became closable, and nothing froze early.
    expect(clock.now()).toBeLessThan(closableAt);
    expect(stage()?.hoursFinalized).toBe(0);

    await waitFor(() => ((stage()?.hoursFinalized ?? 0) > 0 ? true : undefined), {
      timeoutMs: LEAD_MS + 30_000,
      describe: () => `no hour frozen; commit stage ${JSON.stringify(stage())}`,
    });
    expect(clock.now()).toBeGreaterThanOrEqual(closableAt);
    expect(stage()?.predictedLooks).toBeGreaterThanOrEqual(1);
    expect(stage()?.recordsEmitted).toBe(events.length);
  });
});
