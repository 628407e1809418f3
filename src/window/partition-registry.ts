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
  /**
   * Whether everything written to the partition so far is applied. While a backlog is unread, an hour
   * is not closed by grace alone: its remaining events are most likely in that backlog.
   */
  caughtUp: boolean;
}

/** The next offset to be written to a partition (its high watermark). */
export type LogEndLookup = (partition: number) => Promise<bigint>;

export class PartitionRegistry {
  readonly topic: string;
  readonly store: WindowStore;
  #owned = new Map<number, Promise<OwnedPartition>>();
  #assigned = new Set<number>();

  readonly logEnd: LogEndLookup;

  constructor(topic: string, store: WindowStore, logEnd: LogEndLookup) {
    this.topic = topic;
    this.store = store;
    this.logEnd = logEnd;
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
      owned = Promise.all([this.store.claim(ref), this.logEnd(partition)]).then(
        ([{ token, checkpoint }, end]) => {
          const applied = checkpoint === undefined ? undefined : BigInt(checkpoint);
          return { ...ref, token, checkpoint: applied, caughtUp: (applied ?? -1n) + 1n >= end };
        },
      );
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
