/**
 * Which dead letters were redriven: one marker per entry of the failed topic, kept long past any AWS
 * deadline, so a second redrive of the same entry is refused rather than sending its record twice.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';

/** Longer than any entry stays redrivable (AWS takes nothing older than its acceptance window). */
const REDRIVEN_TTL_S = 45 * 24 * 3600;

export class RedriveMarks {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  readonly #dlqTopic: string;

  constructor(redis: ScriptedRedis, keys: Keys, dlqTopic: string) {
    this.#redis = redis;
    this.#keys = keys;
    this.#dlqTopic = dlqTopic;
  }

  async has(entryId: string): Promise<boolean> {
    return (await this.#redis.exists(this.#keys.redriven(this.#dlqTopic, entryId))) === 1;
  }

  /** The ids among these that were redriven. */
  async among(entryIds: readonly string[]): Promise<Set<string>> {
    const marks = await Promise.all(entryIds.map((id) => this.has(id)));
    return new Set(entryIds.filter((_, i) => marks[i]));
  }

  async mark(entryId: string, atMs: number): Promise<void> {
    await this.#redis.set(
      this.#keys.redriven(this.#dlqTopic, entryId),
      new Date(atMs).toISOString(),
      'EX',
      REDRIVEN_TTL_S,
    );
  }
}
