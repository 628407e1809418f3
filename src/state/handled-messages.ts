/**
 * SNS Notifications already handled, by MessageId: a message seen again (SNS redelivering after a lost
 * answer, or a captured copy posted again) is answered without being applied twice.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';

export class HandledMessages {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  /** How long an id is kept: while a copy could still pass the message age check. */
  readonly #ttlMs: number;

  constructor(redis: ScriptedRedis, keys: Keys, ttlMs: number) {
    this.#redis = redis;
    this.#keys = keys;
    this.#ttlMs = ttlMs;
  }

  async seen(messageId: string): Promise<boolean> {
    return (await this.#redis.exists(this.#keys.snsMessage(messageId))) === 1;
  }

  async remember(messageId: string): Promise<void> {
    await this.#redis.set(this.#keys.snsMessage(messageId), '1', 'PX', this.#ttlMs);
  }
}
