/**
 * The crash scenario, shared by the standalone-Redis and the Redis Cluster suites. Invariant 1 under fire: 200k events, the processor (the real CLI in a child process) is kill -9'd at
 * random moments and restarted, at least five times. Every window's frozen quantity must equal the truth:
 * nothing lost, nothing counted twice, and every re-emission identical.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { seededRandom, syntheticEvents } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { WindowStore } from '../../src/state/window-store.ts';
import { killHard, spawnMeterline, stopGracefully } from './child.ts';
import { deleteKeys, type RedisTarget, stackEnv, testKafka, uniqueId, waitFor } from './harness.ts';
import { expectedFrozen, testPipeline, waitForFrozen, wrongRecords } from './pipeline-env.ts';

export const CRASH_EVENTS = Number(process.env.CRASH_EVENTS ?? 200_000);
export const KILLS = 5;

export interface CrashTestOptions {
  /**
   * Sends every resent id after all first sends, instead of right after its original: the resends then reach
   * hours long since counted (and frozen), where only the ids kept for the dedupe horizon refuse them.
   */
  resendsLast?: boolean;
  /** Runs after the sums were verified, before cleanup, with the run's Redis key prefix. */
  afterVerify?: (prefix: string) => Promise<void>;
}

/** `env` overrides the pipeline's settings; with REDIS_URL (and REDIS_CLUSTER) the test's own reads follow it. */
export async function crashTest(
  label: string,
  env: Record<string, string> = {},
  options: CrashTestOptions = {},
): Promise<void> {
  const kafka = testKafka();
  const tp = testPipeline(label, {
    partitions: 6,
    tenants: Array.from({ length: 500 }, (_, i) => `tenant-${i}`),
    env,
  });
  const seed = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
  const random = seededRandom(seed);
  const logFile = join(tmpdir(), `${uniqueId(label)}.log`);
  const closers: (() => Promise<void>)[] = [];
  const redisTarget: RedisTarget = {
    url: env.REDIS_URL ?? stackEnv().redisUrl,
    cluster: env.REDIS_CLUSTER === 'true',
  };
  try {
    const nowMs = Date.now();
    let events = [
      ...syntheticEvents({
        count: CRASH_EVENTS,
        customers: Array.from({ length: 500 }, (_, i) => `tenant-${i}`),
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs,
        duplicateRate: 0.01,
        seed,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    if (options.resendsLast) {
      const ids = new Set<string>();
      const firsts = new Set(events.filter((e) => !ids.has(e.id) && ids.add(e.id)));
      const resends = events.filter((e) => !firsts.has(e));
      events = [...firsts].concat(resends);
    }
    const truth = expectedFrozen(events);
    await tp.createTopics(kafka);
    const redis = createRedis(redisTarget.url, { cluster: redisTarget.cluster === true });
    const windows = new WindowStore(redis, new Keys(tp.run), { dedupeTtlMs: 1, finalizedTtlMs: 1 });
    closers.push(async () => redis.disconnect());
    // Usage keeps arriving while the processor dies and restarts, as it would in production.
    const chunk = Math.ceil(events.length / 40);
    const producing = (async () => {
      for (let i = 0; i < events.length; i += chunk) {
        await produceMessages(events.slice(i, i + chunk).map(eventMessage), {
          kafka,
          topic: tp.topics.usage,
          batchSize: 2000,
        });
        await sleep(1_000);
      }
    })();

    const applied = async () => {
      const times = await windows.partitionTimes(tp.topics.usage, 6);
      return times.reduce((n, t) => n + Number((t.checkpoint ?? -1n) + 1n), 0);
    };
    const progress: number[] = [];
    let child = spawnMeterline(['processor'], tp.env, logFile);
    closers.unshift(() => killHard(child));
    for (let kill = 0; kill < KILLS; kill++) {
      // Kill only once this child has made progress, at a random moment after that.
      const before = await applied();
      await waitFor(async () => ((await applied()) > before ? true : undefined), {
        timeoutMs: 60_000,
        intervalMs: 50,
      });
      await sleep(Math.floor(random() * 1_500));
      await killHard(child);
      progress.push(await applied());
      child = spawnMeterline(['processor'], tp.env, logFile);
    }
    await producing;
    // The kills landed mid-stream: progress was made between them, and input was still left each time.
    expect(new Set(progress).size).toBe(KILLS);
    expect(Math.max(...progress)).toBeLessThan(events.length);
    const billed = await waitForFrozen(kafka, tp.topics.submissions, truth, {
      describe: () => `seed ${seed}; child log ${logFile}`,
    });
    expect(await stopGracefully(child)).toBe(0);
    const wrong = wrongRecords(billed, truth);
    expect(wrong, `seed ${seed}; ${wrong.length} wrong; log ${logFile}`).toEqual([]);
    expect(billed).toEqual(truth);
    await options.afterVerify?.(tp.run);
  } finally {
    for (const close of closers) await close();
    await tp.cleanup(kafka);
    // tp.cleanup only cleans the stack's standalone Redis.
    if (env.REDIS_URL) await deleteKeys(tp.run, redisTarget);
  }
}
