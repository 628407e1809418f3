/** The shapes the window store reads and writes: batches, frozen hours, snapshots, partition times. */
import type { UsageEvent } from '../metering/usage-event.ts';

export type AggregationOp = 's' | 'm';

export interface PendingAggregate {
  field: string;
  op: AggregationOp;
  /**
   * Event ids and their micro-units, index by index; or, with `hashed`, micro-units and the ids' hashes
   * (`hashId`, four words each from `words[4 * at[i]]`), `ids` then empty.
   */
  ids: string[];
  micros: number[];
  hashed?: { words: Uint32Array; at: number[] };
}

/** An event's id as the window store takes it: its text, and where its bytes are when the decoder kept them. */
export type EventId = Pick<UsageEvent, 'id' | 'idBytes' | 'idStart' | 'idEnd'>;

/** Events of one hour that go to one place. */
export interface HourGroup {
  /** The events' own hour (its dedupe set). */
  hourMs: number;
  /**
   * Where their quantities go: their own hour, a later open hour (late events carried forward), or
   * nowhere (undefined: a frozen record counts them already; only their ids are remembered).
   */
  targetMs: number | undefined;
  aggregates: PendingAggregate[];
}

export interface ApplyResult {
  applied: number;
  duplicates: number;
  carried: number;
  /** Replayed events a frozen record counts already: remembered for dedupe, not counted again. */
  counted: number;
}

/** A frozen hour as kept in Redis and in the changelog. */
export interface FrozenHour {
  hourMs: number;
  /** The partition checkpoint it was frozen at (-1 before any input): later events were carried. */
  through: bigint;
  /** Field (customer␟dimension) → frozen record, as stored. */
  records: [field: string, frozen: string][];
  /** The model state it left: field, encoded state ('' when none), whether it owes the next hour. */
  states: [field: string, encoded: string, owes: boolean][];
}

/** One customer's hour closed early (the final flush after unsubscribe-pending). */
export interface CutHour extends FrozenHour {
  customer: string;
}

/** What a Redis that lost a partition's state is rebuilt with (from the changelog). */
export interface PartitionSnapshot {
  /** Frozen hours, and whether each reached the submission topic. */
  hours: (FrozenHour & { emitted: boolean })[];
  /** Customers' hours closed early, and whether each reached the submission topic. */
  cuts: (CutHour & { emitted: boolean })[];
  /** Field → encoded model state ('' when empty), whether it owes the next hour, the hour it is as of. */
  states: Map<string, { encoded: string; owes: boolean; hourMs: number }>;
}

/** One hour of one partition as the commit stage reads it before freezing. */
export interface HourSnapshot {
  /** The partition checkpoint the snapshot was read at ('' when none). */
  checkpoint: string;
  finalized: boolean;
  /** Aggregate field (customer␟dimension[␟tags]) → micro-units. */
  aggregates: [string, bigint][];
  /** Customer␟dimension fields whose state owes units to the next closed hour. */
  due: string[];
  /** Customer␟dimension → encoded model state (null when none). */
  states: Map<string, string | null>;
  /** Customers whose hour was closed early (the final flush): the hour's own close leaves them out. */
  cuts: Set<string>;
}

/** How much of the dedupe state a process keeps in memory, and where the rest goes. */
export interface DedupeMemory {
  /** Id hashes held in memory over all partitions (16 B each, plus up to twice that in table slack). */
  hotIds: number;
  /** A local folder for the spilled hashes (a cache: a claim rebuilds it from Redis). */
  spillDir: string;
}

export interface WindowStoreOptions {
  /** How long event ids are remembered for dedupe. */
  dedupeTtlMs: number;
  /**
   * How long a finalized hour is remembered once emitted (late events are carried forward while it is);
   * it never expires while it waits for its emit.
   */
  finalizedTtlMs: number;
  lateAuditCap?: number;
  /** Id hashes kept in memory (1,000,000 by default) and where older ones spill (the OS temp folder). */
  dedupeMemory?: DedupeMemory;
}

export type LatePolicy = 'carry-forward' | 'dead-letter';

export interface PartitionTime {
  partition: number;
  /** Highest event time applied, ms; undefined before the first event. */
  maxEventTime: number | undefined;
  /** Wall clock of the last batch that carried valid events, ms. */
  activeAt: number | undefined;
  /** Last offset applied. */
  checkpoint: bigint | undefined;
}
