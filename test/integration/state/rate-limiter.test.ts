/**
 * The shared AWS quota on a real Redis: one bucket for every worker, never more than its burst at once,
 * slowing on throttling and climbing back. Counts, not timings: a test never races the clock.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { rateLimit } from '../../../src/redis/scripts.ts';
import { SharedRateLimiter } from '../../../src/state/rate-limiter.ts';
import { deleteKeys, stackEnv, uniqueId } from '../../support/harness.ts';

const redis = createRedis(stackEnv().redisUrl);
const prefixes: string[] = [];
afterAll(async () => {
  for (const p of prefixes) await deleteKeys(p);
  redis.disconnect();
});

function limiters(n: number, rate: number, burst?: number) {
  const prefix = uniqueId('rl');
  prefixes.push(prefix);
  return Array.from(
    { length: n },
    () =>
      new SharedRateLimiter(redis, new Keys(prefix), 'BatchMeterUsage', burst ? { rate, burst } : { rate }),
  );
}

/** Takes tokens as fast as Redis answers, without waiting: how many did the bucket give? */
async function grab(prefix: string, attempts: number, rate: number): Promise<number> {
  let got = 0;
  for (let i = 0; i < attempts; i++) {
    const wait = await rateLimit(redis, new Keys(prefix).rateLimit('BatchMeterUsage'), 'take', {
      rate,
      burst: rate,
      minRate: 1,
      recoveryPerSecond: rate / 60,
    });
    if (wait === 0) got += 1;
    else expect(wait).toBeGreaterThan(0);
  }
  return got;
}

describe('the shared rate limiter', () => {
  it('gives the whole fleet one burst, however many workers ask', async () => {
    const prefix = uniqueId('rl');
    prefixes.push(prefix);
    // 40 immediate asks at 10/s: the burst (10), plus at most what refilled while the asks ran.
    const started = performance.now();
    const got = await grab(prefix, 40, 10);
    const refilled = Math.ceil(((performance.now() - started) / 1000) * 10);
    expect(got).toBeGreaterThanOrEqual(10);
    expect(got).toBeLessThanOrEqual(10 + refilled);
  });

  it('makes a second worker wait for tokens the first one spent', async () => {
    const [a, b] = limiters(2, 5, 5);
    for (let i = 0; i < 5; i++) await a?.acquire();
    expect(a?.stats.waits).toBe(0);
    await b?.acquire();
    // The bucket was empty: b had to wait for a refill rather than call at once.
    expect(b?.stats.waits).toBeGreaterThanOrEqual(1);
    expect(b?.stats.acquired).toBe(1);
  });

  it('cuts the shared rate by 30 % on throttling, down to a floor, for every worker', async () => {
    const [a, b] = limiters(2, 10);
    expect(await a?.throttled()).toBeCloseTo(7, 1);
    expect(await b?.throttled()).toBeCloseTo(4.9, 1);
    for (let i = 0; i < 10; i++) await a?.throttled();
    // The floor is a tenth of the configured rate.
    expect(await b?.throttled()).toBeCloseTo(1, 1);
  });

  it('gives up waiting when the worker stops', async () => {
    const [a] = limiters(1, 1);
    await a?.acquire();
    const stop = new AbortController();
    const waiting = a?.acquire(stop.signal);
    stop.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
  });
});
