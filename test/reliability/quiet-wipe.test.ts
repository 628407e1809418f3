/**
 * Invariant 5 on a quiet topic: all usage is produced and some hours are billed, then Redis loses the
 * pipeline's keys and no further usage arrives. The loss must be noticed without traffic (the processor's
 * state check runs every 5 s by default), the usage topic replayed, and every hour billed once with its
 * exact quantity, the open hour included.
 *
 * The processor's clock runs one hour behind the wall clock until the loss, so that the last hour of usage
 * is still open when Redis is wiped (only the processor's clock moves; Redis, Kafka and AWS keep theirs).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { metrics } from '../../src/observability/metrics.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, seededRandom, syntheticEvents } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { WindowStore } from '../../src/state/window-store.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { deleteKeys, stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);

describe('Redis wiped on a quiet topic', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('notices the loss without new usage, replays, and bills every hour once', async () => {
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    // The default max delay: only the test's clock shift is special here.
    tp = testPipeline('quiet-wipe', {
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_WINDOW_MAX_DELAY: '3h' },
    });
    let behind = HOUR_MS;
    const now = () => Date.now() - behind;
    const open = hourStart(now());
    // Two closed hours, and the open hour up to a minute before the processor's now.
    const closed = [
      ...syntheticEvents({
        count: 4_000,
        customers: tenants,
        dimensions: ['api_calls', 'jobs'],
        hours: 2,
        nowMs: now(),
        duplicateRate: 0.02,
        seed: 5,
        idPrefix: `${tp.run}-c`,
      }),
    ];
    const random = seededRandom(9);
    const span = Math.max(1, now() - 60_000 - open);
    const current: RawEvent[] = Array.from({ length: 1_000 }, (_, i) => ({
      id: `${tp?.run}-o${i}`,
      customer: tenants[i % tenants.length] as string,
      dimension: i % 3 ? 'api_calls' : 'jobs',
      quantity: 1 + Math.floor(random() * 9),
      timestamp: new Date(open + Math.floor(random() * span)).toISOString(),
    }));
    const all = [...closed, ...current].sort(
      (a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)),
    );
    const accepted = () => acceptedAtAws(emulator);

    await tp.createTopics(kafka);
    await produceMessages(all.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true, now });
    // The closed hours are billed; the open hour is applied and waits in Redis.
    const closedHours = expectedAccepted(closed);
    await waitFor(() => (accepted().size >= closedHours.size ? true : undefined), { timeoutMs: 90_000 });
    expect(accepted()).toEqual(closedHours);
    const windows = new WindowStore(redis, new Keys(tp.run), { dedupeTtlMs: 1, finalizedTtlMs: 1 });
    await waitFor(async () => {
      const times = await windows.partitionTimes(tp?.topics.usage as string, 3);
      return times.reduce((n, t) => n + Number((t.checkpoint ?? -1n) + 1n), 0) === all.length
        ? true
        : undefined;
    });

    // Every key of this pipeline is gone (windows, checkpoints, fences, dedupe ids, ledger), and no usage
    // follows. The processor's clock catches up, so the open hour may close.
    await deleteKeys(tp.run);
    behind = 0;

    const expected = expectedAccepted(all);
    expect(expected.size).toBeGreaterThan(closedHours.size);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().size} of ${expected.size} accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(pipeline.processor?.app.stats.stateLosses).toBeGreaterThanOrEqual(1);
    expect(pipeline.processor?.stats.replays).toBeGreaterThanOrEqual(1);
    const lost = (await metrics.stateRecoveries.get()).values.find((v) => v.labels.kind === 'lost');
    expect(lost?.value).toBeGreaterThanOrEqual(1);
  }, 300_000);
});
