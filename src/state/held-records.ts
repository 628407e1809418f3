/**
 * Records of a frozen hour held back from the submission topic (a customer not yet mapped, a quota) and
 * the ones of it that went out already, so a restart emits each record once and knows how long the
 * others have waited.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys, PartitionRef } from '../redis/keys.ts';

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
