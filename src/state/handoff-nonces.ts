/**
 * Spent hand-off tokens: each token's nonce is recorded with SET NX for the token's remaining life, so a
 * second use, on this replica or any other, is refused.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';

export class HandoffNonces {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** Spends a nonce: true the first time, false when it was spent before. Redis errors are thrown. */
  async spend(jti: string, nowMs: number, ttlMs: number): Promise<boolean> {
    return (await this.#redis.set(this.#keys.handoffNonce(jti), String(nowMs), 'PX', ttlMs, 'NX')) === 'OK';
  }
}
