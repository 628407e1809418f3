/**
 * The newest trace contexts of each hour's events, kept so the span that finalizes the hour can link to
 * the events it counts. Tracing data, not billing data.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys, PartitionRef } from '../redis/keys.ts';

/** How many event contexts a finalize span links to, at most. */
export const TRACE_LINKS_PER_HOUR = 16;

export class TraceLinks {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  /** As long as the events' ids are remembered. */
  readonly #ttlMs: number;

  constructor(redis: ScriptedRedis, keys: Keys, ttlMs: number) {
    this.#redis = redis;
    this.#keys = keys;
    this.#ttlMs = ttlMs;
  }

  /**
   * Keeps the newest `TRACE_LINKS_PER_HOUR` event trace contexts per hour. Tracing data, not billing
   * data: written after the batch commits, and a lost sample only costs a link.
   */
  async add(p: PartitionRef, byHour: ReadonlyMap<number, readonly string[]>): Promise<void> {
    if (!byHour.size) return;
    const k = this.#keys.partition(p);
    const ttlSeconds = Math.ceil(this.#ttlMs / 1000);
    const pipeline = this.#redis.pipeline();
    for (const [hourMs, traceparents] of byHour) {
      if (!traceparents.length) continue;
      pipeline.lpush(k.traceLinks(hourMs), ...traceparents);
      pipeline.ltrim(k.traceLinks(hourMs), 0, TRACE_LINKS_PER_HOUR - 1);
      pipeline.expire(k.traceLinks(hourMs), ttlSeconds);
    }
    await pipeline.exec();
  }

  /** The sampled event trace contexts of an hour (newest first). */
  async read(p: PartitionRef, hourMs: number): Promise<string[]> {
    return this.#redis.lrange(this.#keys.partition(p).traceLinks(hourMs), 0, -1);
  }
}
