/**
 * Which partitions this instance owns right now, with the fencing token it claimed for each. Claims are
 * made on assignment (and lazily, if a batch arrives first); a rebalance replaces them all, so a token from
 * an earlier generation is never reused.
 */
import type { PartitionRef } from '../redis/keys.ts';
import type { WindowStore } from './window-store.ts';

export interface OwnedPartition extends PartitionRef {
  token: string;
  /** Last offset applied to Redis; undefined before the first batch ever. */
  checkpoint: bigint | undefined;
}

export class PartitionRegistry {
  readonly topic: string;
  readonly store: WindowStore;
  #owned = new Map<number, Promise<OwnedPartition>>();
  #assigned = new Set<number>();

  constructor(topic: string, store: WindowStore) {
    this.topic = topic;
    this.store = store;
  }

  /** A new assignment: every partition is claimed afresh, bumping its token. */
  assign(partitions: readonly number[]): void {
    this.#owned = new Map();
    this.#assigned = new Set(partitions);
    for (const p of partitions) this.ensure(p)?.catch(() => undefined);
  }

  /**
   * The claim for an assigned partition, made now if needed (a failed claim is retried). Undefined for a
   * partition this instance does not own, or lost to a newer owner until the next assignment: re-claiming
   * it would fence out the rightful owner.
   */
  ensure(partition: number): Promise<OwnedPartition> | undefined {
    if (!this.#assigned.has(partition)) return undefined;
    let owned = this.#owned.get(partition);
    if (!owned) {
      const ref = { topic: this.topic, partition };
      owned = this.store.claim(ref).then(({ token, checkpoint }) => ({
        ...ref,
        token,
        checkpoint: checkpoint === undefined ? undefined : BigInt(checkpoint),
      }));
      owned.catch(() => this.#owned.delete(partition));
      this.#owned.set(partition, owned);
    }
    return owned;
  }

  /** Fenced out: stop writing for this partition until the group assigns it again. */
  lose(partition: number): void {
    this.#owned.delete(partition);
    this.#assigned.delete(partition);
  }

  clear(): void {
    this.#owned = new Map();
    this.#assigned = new Set();
  }

  async owned(): Promise<OwnedPartition[]> {
    const settled = await Promise.allSettled(this.#owned.values());
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }
}
