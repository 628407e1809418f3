/**
 * A lease for a periodic job that one pod of a fleet should run at a time: a Redis key holding the
 * holder's id, set only if absent and renewed by its holder. A holder that dies loses it when the key
 * expires; one that stops hands it over at once.
 */
import { randomUUID } from 'node:crypto';
import type { ScriptedRedis } from '../redis/client.ts';

export class JobLease {
  readonly #redis: ScriptedRedis;
  readonly #key: string;
  readonly #id = randomUUID();

  constructor(redis: ScriptedRedis, key: string) {
    this.#redis = redis;
    this.#key = key;
  }

  /** True when this holder has (or now takes) the lease, kept for `ttlMs` from now. */
  async hold(ttlMs: number): Promise<boolean> {
    if ((await this.#redis.set(this.#key, this.#id, 'PX', ttlMs, 'NX')) === 'OK') return true;
    if ((await this.#redis.get(this.#key)) !== this.#id) return false;
    await this.#redis.pexpire(this.#key, ttlMs);
    return true;
  }

  /** Gives the lease up if this holder still has it. */
  async release(): Promise<void> {
    if ((await this.#redis.get(this.#key)) === this.#id) await this.#redis.del(this.#key);
  }
}
