/**
 * The read side of the hourly window store: what a partition holds, without writing. Tools (status,
 * reconcile) read through it; the WindowStore that the pipeline writes through extends it.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys, PartitionRef } from '../redis/keys.ts';
import { readPartitionTimes } from './partition-times.ts';
import type { PartitionTime } from './window-types.ts';

/** How long a recovery marks a partition's replay (setReplayUntil, setReplayHold). */
export const REPLAY_MARK_TTL_S = 7 * 24 * 3600;

export class WindowReads {
  protected readonly redis: ScriptedRedis;
  protected readonly keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.redis = redis;
    this.keys = keys;
  }

  /** Event time and checkpoint of every partition of a topic. */
  partitionTimes(topic: string, partitions: number): Promise<PartitionTime[]> {
    return readPartitionTimes(this.redis, this.keys, topic, partitions);
  }

  /** How many hours hold open aggregates on the partition. */
  async openHourCount(p: PartitionRef): Promise<number> {
    return this.redis.zcard(this.keys.partition(p).openHours());
  }

  /** The oldest hour of the partition not yet on the submission topic: open, or frozen but not emitted. */
  async oldestUnsubmittedHour(p: PartitionRef): Promise<number | undefined> {
    const k = this.keys.partition(p);
    const res = await this.redis
      .multi()
      .zrange(k.openHours(), '0', '0')
      .zrange(k.pendingEmit(), '0', '0')
      .exec();
    const hours = (res ?? []).flatMap(([, v]) => (v as string[]) ?? []).map(Number);
    return hours.length ? Math.min(...hours) : undefined;
  }

  /** The latest hour closed on the partition, if any. */
  async closedThrough(p: PartitionRef): Promise<number | undefined> {
    const v = await this.redis.get(this.keys.partition(p).closedThrough());
    return v === null ? undefined : Number(v);
  }

  /** Whether some customer's model state owes units to the next closed hour. */
  async hasDue(p: PartitionRef): Promise<boolean> {
    return (await this.redis.scard(this.keys.partition(p).due())) > 0;
  }

  /** What waits on a partition: hours with open aggregates, frozen hours not emitted, fields owing units. */
  async partitionCounts(p: PartitionRef): Promise<{ openHours: number; pendingEmits: number; due: number }> {
    const k = this.keys.partition(p);
    const [openHours, pendingEmits, due] = await Promise.all([
      this.redis.zcard(k.openHours()),
      this.redis.zcard(k.pendingEmit()),
      this.redis.scard(k.due()),
    ]);
    return { openHours, pendingEmits, due };
  }

  /** The open aggregates of the partition's hours from `fromMs` (inclusive) to `toMs` (exclusive). */
  async openAggregates(
    p: PartitionRef,
    fromMs: number,
    toMs: number,
  ): Promise<{ hourMs: number; field: string; micros: bigint }[]> {
    const k = this.keys.partition(p);
    const out: { hourMs: number; field: string; micros: bigint }[] = [];
    for (const h of (await this.redis.zrange(k.openHours(), '0', '-1')).map(Number)) {
      if (h < fromMs || h >= toMs) continue;
      const aggs = await this.redis.hgetall(k.aggregates(h));
      for (const [field, micros] of Object.entries(aggs))
        out.push({ hourMs: h, field, micros: BigInt(micros) });
    }
    return out;
  }

  /** The late events carried to another hour, newest first, as `eventId|field|fromHour|toHour`. */
  lateAudit(p: PartitionRef): Promise<string[]> {
    return this.redis.lrange(this.keys.partition(p).lateAudit(), 0, -1);
  }

  /** The ms left on the partition's replay marks (set by a recovery after a state loss); none when unset. */
  async replayMarkTtlsMs(p: PartitionRef): Promise<number[]> {
    const k = this.keys.partition(p);
    const ttls = await Promise.all([k.replayHold(), k.replay()].map((key) => this.redis.pttl(key)));
    return ttls.filter((t) => t > 0);
  }

  /** The first hour of zero records, once the pipeline set it (see WindowStore.zeroRecordsFrom). */
  async zeroRecordsStart(topic: string): Promise<number | undefined> {
    const v = await this.redis.get(this.keys.zeroRecordsFrom(topic));
    return v === null ? undefined : Number(v);
  }
}
