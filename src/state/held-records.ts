/**
 * Records of a frozen hour held back from the submission topic (a customer not yet mapped, a quota) and
 * the ones of it that went out already, so a restart emits each record once and knows how long the
 * others have waited.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import { type Keys, type PartitionRef, splitAggregateField } from '../redis/keys.ts';

export class HeldRecords {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  readonly #finalizedTtlMs: number;

  constructor(redis: ScriptedRedis, keys: Keys, finalizedTtlMs: number) {
    this.#redis = redis;
    this.#keys = keys;
    this.#finalizedTtlMs = finalizedTtlMs;
  }

  /** Fields of a frozen hour already emitted (or dead-lettered) while others of it are held. */
  async sent(p: PartitionRef, hourMs: number): Promise<Set<string>> {
    return new Set(await this.#redis.smembers(this.#keys.partition(p).sent(hourMs)));
  }

  /** Notes fields of a frozen hour as emitted (or dead-lettered), and no longer held. */
  async markSent(p: PartitionRef, hourMs: number, fields: readonly string[]): Promise<void> {
    if (!fields.length) return;
    const k = this.#keys.partition(p);
    await this.#redis
      .multi()
      .sadd(k.sent(hourMs), ...fields)
      // Outlives the hour's deadline; markEmitted's caller deletes it once the whole hour is out.
      .expire(k.sent(hourMs), Math.ceil(this.#finalizedTtlMs / 1000))
      .hdel(k.held(), ...fields.map((f) => `${hourMs}|${f}`))
      .exec();
  }

  /** When each of these fields of a frozen hour was first held (now, for those held just now). */
  async since(
    p: PartitionRef,
    hourMs: number,
    fields: readonly string[],
    nowMs: number,
  ): Promise<Map<string, number>> {
    const k = this.#keys.partition(p);
    const pipeline = this.#redis.pipeline();
    for (const f of fields) pipeline.hsetnx(k.held(), `${hourMs}|${f}`, String(nowMs));
    pipeline.hmget(k.held(), ...fields.map((f) => `${hourMs}|${f}`));
    const res = (await pipeline.exec()) ?? [];
    const since = (res[res.length - 1]?.[1] as (string | null)[] | undefined) ?? [];
    return new Map(fields.map((f, i) => [f, Number(since[i] ?? nowMs)]));
  }

  /** These fields of the hour are held no more (they went out). */
  async release(p: PartitionRef, hourMs: number, fields: readonly string[]): Promise<void> {
    if (!fields.length) return;
    await this.#redis.hdel(this.#keys.partition(p).held(), ...fields.map((f) => `${hourMs}|${f}`));
  }

  /** Every held record of the partition: `<hour>|<field>` → since (ms). */
  async all(p: PartitionRef): Promise<Map<string, number>> {
    const all = await this.#redis.hgetall(this.#keys.partition(p).held());
    return new Map(Object.entries(all).map(([k, v]) => [k, Number(v)]));
  }

  /** The whole hour is out: its sent set goes. */
  async forgetSent(p: PartitionRef, hourMs: number): Promise<void> {
    await this.#redis.del(this.#keys.partition(p).sent(hourMs));
  }
}

/** One held record, as the commit stage keeps it. */
export interface HeldRecord {
  hourMs: number;
  tenant: string;
  dimension: string;
  sinceMs: number;
}

/**
 * Every held record of the usage topic's partitions, from the commit stage's `held` hashes (field
 * `<hour ms>|<customer␟dimension>` → since ms). The partitions are found by SCAN, so none is missed
 * whatever the topic's partition count; on Redis Cluster every master is scanned.
 */
export async function heldUsage(redis: ScriptedRedis, keys: Keys, topic: string): Promise<HeldRecord[]> {
  const first = keys.partition({ topic, partition: 0 }).held();
  const [head, tail] = first.split(`{${topic}/0}`) as [string, string];
  const glob = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');
  const pattern = `${glob(head)}{${glob(topic)}/*}${glob(tail)}`;
  const nodes =
    'nodes' in redis && typeof redis.nodes === 'function' && redis.isCluster
      ? redis.nodes('master')
      : [redis];
  const out: HeldRecord[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      for (const key of found) {
        const all = await node.hgetall(key);
        for (const [field, since] of Object.entries(all)) {
          const bar = field.indexOf('|');
          const aggregate = splitAggregateField(field.slice(bar + 1));
          const hourMs = Number(field.slice(0, bar));
          if (bar < 0 || !aggregate || !Number.isFinite(hourMs)) continue;
          out.push({
            hourMs,
            tenant: aggregate.customer,
            dimension: aggregate.dimension,
            sinceMs: Number(since),
          });
        }
      }
    } while (cursor !== '0');
  }
  return out;
}
