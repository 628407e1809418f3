/**
 * The AWS call quota, shared by every worker pod through a token bucket in Redis (rateLimit.lua). A
 * worker takes a token before each call and reports throttling, which cuts the shared rate by 30 %; the
 * rate then climbs back linearly.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { metrics } from '../observability/metrics.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import { type BucketSettings, rateLimit } from '../redis/scripts.ts';

export interface RateLimitOptions {
  /** Requests per second for the whole fleet (AWS: 10 per account, Region and API). */
  rate: number;
  /**
   * Tokens that may be spent at once; defaults to half a second's worth: AWS's bucket holds about a
   * second, and the other half absorbs calls that bunch up on the way there.
   */
  burst?: number;
  /** The rate never adapts below this. */
  minRate?: number;
  /** Requests per second regained per second after throttling (default: back to full within about 3 s). */
  recoveryPerSecond?: number;
}

export class SharedRateLimiter {
  readonly stats = { acquired: 0, waits: 0, waitedMs: 0, throttled: 0 };
  readonly #redis: ScriptedRedis;
  readonly #key: string;
  readonly #bucket: BucketSettings;

  constructor(redis: ScriptedRedis, keys: Keys, api: string, o: RateLimitOptions) {
    this.#redis = redis;
    this.#key = keys.rateLimit(api);
    this.#bucket = {
      rate: o.rate,
      burst: o.burst ?? Math.max(1, o.rate / 2),
      minRate: o.minRate ?? Math.max(0.5, o.rate / 10),
      recoveryPerSecond: o.recoveryPerSecond ?? o.rate / 5,
    };
  }

  /** Waits until the fleet may make one more call. */
  async acquire(signal?: AbortSignal): Promise<void> {
    for (;;) {
      const wait = await rateLimit(this.#redis, this.#key, 'take', this.#bucket);
      if (wait === 0) {
        this.stats.acquired += 1;
        return;
      }
      this.stats.waits += 1;
      // A little jitter, so pods told the same wait do not all come back at once; small, since every
      // millisecond here is a millisecond of the quota left unused.
      const ms = wait + Math.floor(Math.random() * Math.min(5, wait / 10));
      this.stats.waitedMs += ms;
      metrics.rateLimiterWaitSeconds.inc(ms / 1000);
      await delay(ms, undefined, signal ? { signal } : undefined);
    }
  }

  /** AWS answered ThrottlingException: slow the whole fleet down. Returns the new rate (req/s). */
  async throttled(): Promise<number> {
    this.stats.throttled += 1;
    metrics.rateLimiterThrottled.inc();
    return (await rateLimit(this.#redis, this.#key, 'throttled', this.#bucket)) / 1000;
  }
}
