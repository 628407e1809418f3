/**
 * The hourly window state store of one partition task. Processors add events to an in-memory batch
 * (pre-aggregated per hour, customer and dimension); commit applies the whole batch with its offsets in
 * one Redis script. Opening the store claims the partition and, when Redis lost its state, plans the
 * replay from Kafka.
 */

import type { RestorePoint, StateStore, StoreHealth, TaskId } from '../engine/processor.ts';
import type { Logger } from '../log.ts';
import { metrics } from '../observability/metrics.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import type { AggregationOp, ApplyResult, LatePolicy, WindowStore } from './window-store.ts';

export const HOURLY_WINDOWS = 'hourly-windows';

export interface ProcessorStats {
  events: number;
  applied: number;
  duplicates: number;
  carriedLate: number;
  failed: Record<string, number>;
  /** Input re-read after a state loss that was already handled before it (bad or too old). */
  replaySkipped: number;
  /** Events whose tags AWS would refuse, billed untagged. */
  untagged: number;
  /** Events forwarded to their customer's partition. */
  forwarded: number;
  replays: number;
  batches: number;
}

export function emptyStats(): ProcessorStats {
  return {
    events: 0,
    applied: 0,
    duplicates: 0,
    carriedLate: 0,
    failed: {},
    replaySkipped: 0,
    untagged: 0,
    forwarded: 0,
    replays: 0,
    batches: 0,
  };
}

/** What the store needs to know about Kafka to recover from a state loss. */
export interface RecoverySource {
  /** The group's committed offset for the partition (the next offset to read), if any. */
  committedOffset(task: TaskId): Promise<bigint | undefined>;
  /** The first offset whose broker timestamp is at or after `timestampMs`. */
  offsetForTime(task: TaskId, timestampMs: number): Promise<string>;
}

export interface HourlyWindowStoreOptions {
  windows: WindowStore;
  recovery: RecoverySource;
  latePolicy: LatePolicy;
  /** How far back a replay reaches: the oldest hour AWS can still accept. */
  replayHorizonMs: number;
  stats: ProcessorStats;
  logger: Logger;
  now: () => number;
}

/** Event contexts one batch adds to an hour's sample (the hour keeps the newest few over all batches). */
const LINKS_PER_HOUR_PER_BATCH = 4;

/** One aggregate of the batch: ids and micro-units in parallel arrays (no object per event). */
type Pending = { op: AggregationOp; ids: string[]; micros: number[] };

export class HourlyWindowStore implements StateStore {
  readonly name = HOURLY_WINDOWS;
  readonly #o: HourlyWindowStoreOptions;
  #task: TaskId | undefined;
  #token: string | undefined;
  /** hour → aggregate field (customer␟dimension) → pending aggregate. */
  #batch = new Map<number, Map<string, Pending>>();
  #maxEventTime: number | undefined;
  /** hour → a few of the batch's event trace contexts (only while tracing is on). */
  #links = new Map<number, string[]>();
  #finalized = new Map<number, boolean>();

  constructor(options: HourlyWindowStoreOptions) {
    this.#o = options;
  }

  get task(): TaskId {
    if (!this.#task) throw new Error('store is not open');
    return this.#task;
  }

  /** The fencing token this task holds; the commit stage writes with it too. */
  get token(): string {
    if (!this.#token) throw new Error('store is not open');
    return this.#token;
  }

  get windows(): WindowStore {
    return this.#o.windows;
  }

  async open(task: TaskId, processedUntil?: bigint): Promise<RestorePoint> {
    this.#task = task;
    const { token, checkpoint } = await this.#o.windows.claim(task);
    this.#token = token;
    if (checkpoint !== undefined) {
      const ckpt = BigInt(checkpoint);
      if (processedUntil !== undefined && processedUntil > ckpt + 1n) {
        // Redis fell behind what this instance had processed (failover, restore): what lies between is a
        // replay (no second dead letter, no hour closed before it is through).
        const known = await this.#o.windows.replayUntil(task);
        if (known === undefined || known < processedUntil) {
          await this.#o.windows.setReplayUntil(task, processedUntil);
        }
        this.#o.stats.replays += 1;
        this.#o.logger.error(
          { partition: task.partition, from: (ckpt + 1n).toString(), replayUntil: processedUntil.toString() },
          'Redis is behind: replaying the partition from its checkpoint',
        );
      }
      const replayUntil = await this.#o.windows.replayUntil(task);
      // Resume right after the last applied offset, whatever the group offset says.
      return {
        checkpoint: ckpt,
        seekTo: (ckpt + 1n).toString(),
        ...(replayUntil !== undefined && ckpt + 1n < replayUntil ? { replayUntil } : {}),
      };
    }
    const group = await this.#o.recovery.committedOffset(task);
    // The group's offset may lag (it is committed every few seconds): what this instance knows counts too.
    const committed =
      processedUntil !== undefined && (group === undefined || processedUntil > group)
        ? processedUntil
        : group;
    if (committed === undefined || committed <= 0n) return {};
    // Progress existed, but Redis has no checkpoint: the state was lost. Kafka is the source of truth:
    // re-read from the oldest hour AWS can still accept; records re-emitted with the same id and quantity
    // are idempotent, and the ledger skips those already accepted.
    const from = hourStart(this.#o.now() - this.#o.replayHorizonMs) + HOUR_MS;
    const seekTo = await this.#o.recovery.offsetForTime(task, from);
    await this.#o.windows.setReplayUntil(task, committed);
    this.#o.stats.replays += 1;
    this.#o.logger.error(
      { partition: task.partition, from: hourIso(from), seekTo, replayUntil: committed.toString() },
      'state lost: replaying the partition from Kafka',
    );
    return { seekTo, replayUntil: committed };
  }

  /** Buffers one event of the current batch. Resends within the batch are left to the script. */
  add(
    hourMs: number,
    field: string,
    op: AggregationOp,
    id: string,
    micros: number,
    eventTimeMs: number,
    traceparent?: string,
  ): void {
    if (traceparent) {
      const links = this.#links.get(hourMs);
      if (!links) this.#links.set(hourMs, [traceparent]);
      else if (links.length < LINKS_PER_HOUR_PER_BATCH) links.push(traceparent);
    }
    let hour = this.#batch.get(hourMs);
    if (!hour) {
      hour = new Map();
      this.#batch.set(hourMs, hour);
    }
    let agg = hour.get(field);
    if (!agg) {
      agg = { op, ids: [], micros: [] };
      hour.set(field, agg);
    }
    agg.ids.push(id);
    agg.micros.push(micros);
    if (this.#maxEventTime === undefined || eventTimeMs > this.#maxEventTime)
      this.#maxEventTime = eventTimeMs;
  }

  /** Whether an hour is finalized (asked once per hour per batch, for the dead-letter late policy). */
  async isFinalized(hourMs: number): Promise<boolean> {
    const known = this.#finalized.get(hourMs);
    if (known !== undefined) return known;
    const fin = (await this.#o.windows.finalizedAmong(this.task, [hourMs])).has(hourMs);
    this.#finalized.set(hourMs, fin);
    return fin;
  }

  async commit(batch: { after: bigint | undefined; last: string; nowMs: number }): Promise<void> {
    const groups = [...this.#batch].map(([hourMs, fields]) => ({
      hourMs,
      aggregates: [...fields].map(([field, p]) => ({ field, op: p.op, ids: p.ids, micros: p.micros })),
    }));
    const links = this.#links;
    let res: ApplyResult;
    try {
      res = await this.#o.windows.applyBatch(this.task, this.token, {
        offsets: { after: batch.after?.toString(), last: batch.last },
        groups,
        carryHourMs: hourStart(batch.nowMs),
        policy: this.#o.latePolicy,
        maxEventTimeMs: this.#maxEventTime,
        nowMs: batch.nowMs,
      });
    } finally {
      this.abort();
    }
    // The batch is durable: a tracing sample that fails to land must not make it look unapplied.
    if (links.size && res.applied) {
      await this.#o.windows
        .addTraceLinks(this.task, links)
        .catch((err: unknown) =>
          this.#o.logger.warn({ err, partition: this.task.partition }, 'could not keep trace links'),
        );
    }
    const s = this.#o.stats;
    s.applied += res.applied;
    s.duplicates += res.duplicates;
    s.carriedLate += res.carried;
    s.batches += 1;
    metrics.events.inc({ result: 'applied' }, res.applied);
    if (res.duplicates) metrics.events.inc({ result: 'duplicate' }, res.duplicates);
    if (res.carried) metrics.events.inc({ result: 'carried_late' }, res.carried);
    if (res.carried) {
      this.#o.logger.warn(
        { partition: this.task.partition, carried: res.carried },
        'late events carried into the open hour',
      );
    }
  }

  verify(after: bigint | undefined): Promise<StoreHealth> {
    return this.#o.windows.verify(this.task, this.token, after);
  }

  abort(): void {
    this.#batch = new Map();
    this.#maxEventTime = undefined;
    this.#finalized = new Map();
    this.#links = new Map();
  }

  async close(): Promise<void> {
    this.abort();
  }
}
