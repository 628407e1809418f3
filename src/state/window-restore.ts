/**
 * Rebuilding a partition's window state in Redis from its changelog (after a loss or a fall-back), in
 * pipelined chunks so a large partition never builds one huge reply.
 */
import { MeterlineError } from '../errors.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { FIELD_SEPARATOR, type PartitionKeys } from '../redis/keys.ts';
import { frozenHashFields } from './frozen-hours.ts';
import type { PartitionSnapshot } from './window-types.ts';

/** What Redis still holds of the partition, read before restoring. */
export interface HeldState {
  /** The latest hour it has closed (undefined: none, or it lost everything). */
  closedThrough: number | undefined;
  /** Customers it has cut, by hour. */
  cuts: Map<number, Map<string, bigint>>;
}

/**
 * After a loss, restores every frozen hour (emitted ones expire like any emitted hour; the others wait
 * for their emit), the latest hour closed and the model state; after a fall-back (failover to a lagging
 * replica, an older snapshot), only the hours frozen after the latest one Redis still has, and the state
 * they left. Idempotent: a restore cut short is simply run again. Returns how many hours were restored.
 */
export async function restorePartition(
  redis: ScriptedRedis,
  k: PartitionKeys,
  finalizedTtlMs: number,
  snapshot: PartitionSnapshot,
  held: HeldState,
): Promise<number> {
  const known = held.closedThrough;
  const hours = snapshot.hours.filter((h) => known === undefined || h.hourMs > known);
  const cuts = snapshot.cuts.filter((c) => !held.cuts.get(c.hourMs)?.has(c.customer));
  if (!hours.length && !cuts.length) return 0;
  const ttl = Math.ceil(finalizedTtlMs / 1000);
  let pipeline = redis.pipeline();
  let queued = 0;
  const flush = async () => {
    const res = (await pipeline.exec()) ?? [];
    const failed = res.find(([e]) => e);
    if (failed) {
      throw new MeterlineError('redis_error', 'restoring the partition failed', {
        retriable: true,
        cause: failed[0],
      });
    }
    pipeline = redis.pipeline();
    queued = 0;
  };
  let closed: number | undefined;
  for (const h of hours) {
    const key = k.finalized(h.hourMs);
    const fields = frozenHashFields(h);
    for (let i = 0; i < fields.length; i += 2_000) pipeline.hset(key, ...fields.slice(i, i + 2_000));
    if (h.emitted) pipeline.expire(key, ttl);
    else pipeline.zadd(k.pendingEmit(), h.hourMs, String(h.hourMs));
    // Usage of the hour Redis still held (it fell behind) is in the frozen records: drop it.
    pipeline.del(k.aggregates(h.hourMs));
    pipeline.zrem(k.openHours(), String(h.hourMs));
    if (closed === undefined || h.hourMs > closed) closed = h.hourMs;
    if (++queued >= 100) await flush();
  }
  for (const c of cuts) {
    const key = k.cut(c.hourMs, c.customer);
    const fields = frozenHashFields(c, c.customer);
    for (let i = 0; i < fields.length; i += 2_000) pipeline.hset(key, ...fields.slice(i, i + 2_000));
    pipeline.hset(k.cuts(c.hourMs), c.customer, c.through.toString());
    if (c.emitted) pipeline.expire(key, ttl);
    else pipeline.zadd(k.pendingCuts(), c.hourMs, `${c.hourMs}|${c.customer}`);
    if (++queued >= 100) await flush();
  }
  const cutHours = new Set(cuts.map((c) => c.hourMs));
  for (const [field, { encoded, owes, hourMs }] of snapshot.states) {
    if (known !== undefined && hourMs <= known && !cutHours.has(hourMs)) continue;
    if (encoded) pipeline.hset(k.modelState(), field, encoded);
    else pipeline.hdel(k.modelState(), field);
    if (owes) pipeline.sadd(k.due(), field);
    else pipeline.srem(k.due(), field);
    if (++queued >= 1_000) await flush();
  }
  if (closed !== undefined) pipeline.set(k.closedThrough(), String(closed));
  await flush();
  // A cut customer's usage of the hour is in its cut records, not in the hour's aggregates any more.
  for (const c of cuts) {
    const prefix = `${c.customer}${FIELD_SEPARATOR}`;
    const fields = (await redis.hkeys(k.aggregates(c.hourMs))).filter((f) => f.startsWith(prefix));
    if (fields.length) await redis.hdel(k.aggregates(c.hourMs), ...fields);
  }
  return hours.length + cuts.length;
}
