/**
 * The stream-processing vocabulary, after Kafka Streams: a topology of a source, processors and sinks;
 * processors with init/process/close; state stores; wall-clock punctuators. Small on purpose: one source
 * topic, a chain of processors, named sinks, and stores that commit with the offsets. No stream-time
 * punctuation: hours close on the wall clock bounded by the event-time watermark (commit/close-boundary.ts),
 * which the commit stage reads from the store over every partition, not from one task's stream.
 */
import type { IHeaders } from 'kafkajs';

export interface TaskId {
  topic: string;
  partition: number;
}

/** A message as read from the source topic (its topic and partition are the task's). */
export interface SourceRecord {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  /** Broker timestamp, epoch ms as a string (kafkajs). */
  timestamp: string;
  /** The same as a number, where the record can give it without the string (src/kafka/lazy-records.ts). */
  readonly timestampMs?: number;
  headers?: IHeaders;
}

export interface SinkMessage {
  key: string | null;
  value: string | Buffer | null;
  headers?: Record<string, string>;
}

export interface ProcessorContext {
  readonly task: TaskId;
  /** The source record being processed: processors quote it in dead letters. */
  readonly record: SourceRecord;
  /** Wall clock at the start of the batch; one value per batch keeps a batch's decisions consistent. */
  readonly nowMs: number;
  /** True while re-reading input that was processed before a state loss. */
  readonly replaying: boolean;
  /** Hands a value to the next processor in the chain. */
  forward(value: unknown): void | Promise<void>;
  /** Buffers a message for a sink; sinks are flushed before the state stores commit. */
  send(sink: string, message: SinkMessage): void;
  getStateStore<S extends StateStore>(name: string): S;
}

export interface Processor<In = unknown> {
  init?(context: {
    task: TaskId;
    getStateStore<S extends StateStore>(name: string): S;
  }): void | Promise<void>;
  process(value: In, context: ProcessorContext): void | Promise<void>;
  close?(): void | Promise<void>;
}

/** The outcome of opening a task's stores: where the source must (re)start reading. */
export interface RestorePoint {
  /** Offset to seek to; undefined to continue from the group's committed offset. */
  seekTo?: string;
  /** Offsets below this were processed before a state loss and are now replayed. */
  replayUntil?: bigint;
  /** No hour closes until the input below this offset is through (the log end when recovery began). */
  holdUntil?: bigint;
  /** Last offset applied, as the store says; records at or below it are skipped. */
  checkpoint?: bigint;
}

/**
 * A store that keeps one partition's state and commits it atomically together with the offset of the
 * last record it covers (Kafka Streams flushes a store, then commits; ours does both in one step).
 */
export interface StateStore {
  readonly name: string;
  /**
   * Claims the partition (fencing) and says where to resume. `processedUntil`: input below this offset was
   * processed before, as the caller knows (a store with no checkpoint left must replay it).
   */
  open(task: TaskId, processedUntil?: bigint): Promise<RestorePoint>;
  /**
   * Makes the batch's changes durable together with its last offset, if the store's checkpoint still is
   * `after` (the task's). Throws MeterlineError: `fenced`; `stale_batch` when the store is ahead (a lost
   * reply applied part of the input already); `store_behind` / `state_lost` when it lost writes.
   */
  commit(batch: { after: bigint | undefined; last: string; nowMs: number }): Promise<void>;
  /**
   * Whether the store still holds what the task committed last (`after`), asked on a wall-clock beat so a
   * loss is noticed without traffic: 'lost' (its state is gone), 'behind' (an older checkpoint or fence:
   * failover, restore), 'fenced' (a newer owner took the partition), or 'ok'.
   */
  verify?(after: bigint | undefined): Promise<StoreHealth>;
  /** Drops uncommitted changes (the batch will be redelivered). */
  abort(): void;
  close(): Promise<void>;
}

export type StoreHealth = 'ok' | 'lost' | 'behind' | 'fenced';

/**
 * Called on a wall-clock schedule with the wall clock's time. May return the ms until it has work next
 * (the schedule runs it then, if sooner than its interval).
 */
export type Punctuator = (timestampMs: number) => Promise<number | undefined> | Promise<void>;
