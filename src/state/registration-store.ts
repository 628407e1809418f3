/**
 * The registration side's small shared counters and caches in Redis: fixed request windows
 * (rateWindow.lua) and ResolveCustomer's answers by token hash.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import { rateWindow } from '../redis/scripts.ts';

/** Fixed-window request counters shared by every registration replica. */
export class RequestWindows {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** Counts one request against `name`'s window: 0 when allowed, else the ms until the window ends. */
  count(name: string, windowMs: number, allowed: number): Promise<number> {
    return rateWindow(this.#redis, this.#keys.registrationRate(name), windowMs, allowed);
  }
}

/** ResolveCustomer's answers, by the token's SHA-256 (the token itself is never stored). */
export class ResolvedTokens {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** The stored answer (JSON), or null. */
  get(tokenHash: string): Promise<string | null> {
    return this.#redis.get(this.#keys.resolvedToken(tokenHash));
  }

  async keep(tokenHash: string, answer: string, ttlMs: number): Promise<void> {
    await this.#redis.set(this.#keys.resolvedToken(tokenHash), answer, 'PX', ttlMs);
  }
}
