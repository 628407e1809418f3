/**
 * The hourly window state store of one partition task. Processors add events to an in-memory batch
 * (pre-aggregated per hour, customer and dimension); commit applies the whole batch with its offsets in
 * one Redis script. Opening the store claims the partition and, when Redis lost its state, rebuilds the
 * frozen hours and model state from the changelog and plans the replay from Kafka.
 *
 * Where an event's quantity goes depends only on the input and the frozen hours (each with the offset it
 * was frozen through), never on the processor's clock: its own hour while that hour is open at the
 * event's offset; else (a late event, carried forward) the hour it arrived in by its Kafka timestamp, the
 * customer's open hour then, or the first one after it still open at that offset; and nowhere when that
 * hour's frozen record counts it already (a replay). So a replay after a loss puts every unit where it
 * went the first time. The task keeps the frozen hours in memory: it is their only writer while it holds
 * the partition.
 */

import type { RestorePoint, StateStore, StoreHealth, TaskId } from '../engine/processor.ts';
import { isMeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { metrics } from '../observability/metrics.ts';
import { cutScopesOf } from '../redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import { hashId, hashLatin1Id } from './id-hash.ts';
import type { ProcessorStats } from './processor-stats.ts';
import type { WindowStore } from './window-store.ts';
import type {
  AggregationOp,
  ApplyResult,
  EventId,
  HourGroup,
  LatePolicy,
  PartitionSnapshot,
} from './window-types.ts';

export const HOURLY_WINDOWS = 'hourly-windows';

/** What the store needs to know about Kafka to recover from a state loss. */
export interface RecoverySource {
  /** The group's committed offset for the partition (the next offset to read), if any. */
  committedOffset(task: TaskId): Promise<bigint | undefined>;
  /** The first offset whose broker timestamp is at or after `timestampMs`. */
  offsetForTime(task: TaskId, timestampMs: number): Promise<string>;
  /** The partition's log end offset now (the next offset to be written). */
  logEnd(task: TaskId): Promise<bigint>;
  /**
   * The partition's changelog, folded (window-changelog.ts): frozen hours from `fromHourMs` on, and the
   * model state. Empty when the changelog holds nothing for it.
   */
  readChangelog(task: TaskId, fromHourMs: number): Promise<PartitionSnapshot>;
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
  /** The product of a dimension (from the plan): a buyer leaving one product is cut for that one only. */
  productOf?: (dimension: string) => string | undefined;
  /** Told the latest event time a committed batch added to the partition's windows (the commit stage's wake rule). */
  onBatchEventTime?: (partition: number, maxEventTimeMs: number) => void;
}

/** Event contexts one batch adds to an hour's sample (the hour keeps the newest few over all batches). */
const LINKS_PER_HOUR_PER_BATCH = 4;

/**
 * One aggregate of the batch: micro-units and ids in parallel arrays (no object per event). Events counted in
 * their own hour keep only their id's hash (its position in the batch's hash buffer); events of a frozen hour
 * keep the id's text (late events are audited by id).
 */
type Pending = { op: AggregationOp; ids: string[]; at: number[]; micros: number[] };

/** Where an event's quantity goes: see the module comment. */
export type Disposition = 'on-time' | 'late' | 'counted';

export class HourlyWindowStore implements StateStore {
  readonly name = HOURLY_WINDOWS;
  readonly #o: HourlyWindowStoreOptions;
  #task: TaskId | undefined;
  #token: string | undefined;
  /** hour → aggregate field (customer␟dimension) → pending aggregate: events counted in their own hour. */
  #batch = new Map<number, Map<string, Pending>>();
  /** The batch's id hashes, four words each, in the order add() took them. */
  #hashes = new Uint32Array(4 * 1024);
  #hashCount = 0;
  /** The hour of #batch that add() used last. */
  #lastHourMs = Number.NaN;
  #lastHour: Map<string, Pending> | undefined;
  /** `hour>target` → events of a frozen hour: carried to a later hour, or (no target) counted already. */
  #moved = new Map<string, { hourMs: number; targetMs: number | undefined; fields: Map<string, Pending> }>();
  /** Hours frozen on the partition → the checkpoint each was frozen through (-1 when not known). */
  #frozen = new Map<number, bigint>();
  /**
   * Hours closed early for some customers (the final flush) → cut scope (a customer, or one product of
   * it: `cutScope`) → the checkpoint of its cut. For the fields of that scope it stands in for the hour's
   * own frozen checkpoint.
   */
  #cuts = new Map<number, Map<string, bigint>>();
  #maxEventTime: number | undefined;
  /** hour → a few of the batch's event trace contexts (only while tracing is on). */
  #links = new Map<number, string[]>();

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
    const replayFrom = hourStart(this.#o.now() - this.#o.replayHorizonMs) + HOUR_MS;
    if (checkpoint !== undefined) {
      const ckpt = BigInt(checkpoint);
      if (processedUntil !== undefined && processedUntil > ckpt + 1n) {
        // Hours frozen (and maybe billed) after the point Redis fell back to come back from the changelog.
        const restored = await this.#o.windows.restore(
          task,
          await this.#o.recovery.readChangelog(task, replayFrom - HOUR_MS),
        );
        // Redis fell behind what this instance had processed (failover, restore): what lies between is a
        // replay (no second dead letter, no hour closed before it is through).
        const known = await this.#o.windows.replayUntil(task);
        if (known === undefined || known < processedUntil) {
          await this.#o.windows.setReplayUntil(task, processedUntil);
        }
        this.#o.stats.replays += 1;
        this.#o.logger.error(
          {
            partition: task.partition,
            from: (ckpt + 1n).toString(),
            replayUntil: processedUntil.toString(),
            hoursRestored: restored,
          },
          'Redis is behind: replaying the partition from its checkpoint',
        );
      }
      const replayUntil = await this.#o.windows.replayUntil(task);
      const holdUntil = await this.#o.windows.replayHold(task);
      await this.#loadFrozen();
      // Resume right after the last applied offset, whatever the group offset says.
      return {
        checkpoint: ckpt,
        seekTo: (ckpt + 1n).toString(),
        ...(replayUntil !== undefined && ckpt + 1n < replayUntil ? { replayUntil } : {}),
        ...(holdUntil !== undefined && ckpt + 1n < holdUntil ? { holdUntil } : {}),
      };
    }
    const group = await this.#o.recovery.committedOffset(task);
    // The group's offset may lag (it is committed every few seconds): what this instance knows counts too.
    const committed =
      processedUntil !== undefined && (group === undefined || processedUntil > group)
        ? processedUntil
        : group;
    const started = this.#o.now();
    const snapshot = await this.#o.recovery.readChangelog(task, replayFrom - HOUR_MS);
    if ((committed === undefined || committed <= 0n) && !snapshot.hours.length && !snapshot.states.size) {
      await this.#loadFrozen();
      return {};
    }
    // Progress existed, but Redis has no checkpoint: the state was lost. First the changelog gives back
    // every hour frozen (so none is frozen again with other usage) and the model state; then the usage
    // topic is re-read from the oldest hour AWS can still accept. Nothing closes until the replay reaches
    // the log end of now: an hour closed halfway would freeze short.
    const restored = await this.#o.windows.restore(task, snapshot);
    const seekTo = await this.#o.recovery.offsetForTime(task, replayFrom);
    const logEnd = await this.#o.recovery.logEnd(task);
    const replayUntil = committed ?? 0n;
    const holdUntil = logEnd > replayUntil ? logEnd : replayUntil;
    await this.#o.windows.setReplayUntil(task, replayUntil);
    await this.#o.windows.setReplayHold(task, holdUntil);
    await this.#loadFrozen();
    this.#o.stats.replays += 1;
    this.#o.logger.error(
      {
        partition: task.partition,
        from: hourIso(replayFrom),
        seekTo,
        replayUntil: replayUntil.toString(),
        holdUntil: holdUntil.toString(),
        hoursRestored: restored,
        statesRestored: snapshot.states.size,
        restoreMs: this.#o.now() - started,
      },
      'state lost: rebuilt the frozen hours from the changelog, replaying the partition from Kafka',
    );
    return { seekTo, replayUntil, holdUntil };
  }

  /** Reads which hours are frozen (all an event can reach: AWS's window up to now). */
  async #loadFrozen(): Promise<void> {
    const now = this.#o.now();
    const from = hourStart(now - this.#o.replayHorizonMs) - HOUR_MS;
    this.#frozen = await this.#o.windows.frozenThrough(this.task, from, hourStart(now));
    this.#cuts = await this.#o.windows.cutsThrough(this.task, from, hourStart(now));
  }

  /** The commit stage closed a customer's hour early (it runs on this task, between batches). */
  async noteCut(hourMs: number): Promise<void> {
    const cuts = (await this.#o.windows.cutsThrough(this.task, hourMs, hourMs)).get(hourMs);
    if (cuts) this.#cuts.set(hourMs, cuts);
    const oldest = hourStart(this.#o.now() - this.#o.replayHorizonMs) - 2 * HOUR_MS;
    for (const h of this.#cuts.keys()) if (h < oldest) this.#cuts.delete(h);
  }

  /** The checkpoint an hour was closed through for this aggregate field (its cut, else the hour's freeze). */
  #through(hourMs: number, field: string): bigint | undefined {
    // Only after a final flush do customers matter here: the common path reads one map.
    const cuts = this.#cuts.size ? this.#cuts.get(hourMs) : undefined;
    if (cuts) {
      const [whole, product] = cutScopesOf(field, this.#productOf);
      const cut = cuts.get(whole) ?? (product === undefined ? undefined : cuts.get(product));
      if (cut !== undefined) return cut;
    }
    return this.#frozen.get(hourMs);
  }

  readonly #productOf = (dimension: string) => this.#o.productOf?.(dimension);

  /** The commit stage froze an hour (it runs on this task, between batches). */
  async noteFrozen(hourMs: number): Promise<void> {
    const known = await this.#o.windows.frozenThrough(this.task, hourMs, hourMs);
    const through = known.get(hourMs);
    if (through !== undefined) this.#frozen.set(hourMs, through);
    const oldest = hourStart(this.#o.now() - this.#o.replayHorizonMs) - 2 * HOUR_MS;
    for (const h of this.#frozen.keys()) if (h < oldest) this.#frozen.delete(h);
  }

  /**
   * Where an event of `hourMs` at `offset` goes: its own hour, carried to a later one ('late'), or
   * nowhere ('counted': a replayed event that a frozen record counts already).
   */
  disposition(hourMs: number, offset: string, arrivalMs: number, field: string): Disposition {
    const through = this.#through(hourMs, field);
    if (through === undefined) return 'on-time';
    const o = BigInt(offset);
    if (o <= through) return 'counted';
    return this.#carryTarget(hourMs, o, arrivalMs, field) === undefined ? 'counted' : 'late';
  }

  /**
   * Where a late event goes: the hour it arrived in (never before the hour after its own), or the first
   * later one still open at offset `o`; undefined when a frozen one counts it already.
   */
  #carryTarget(hourMs: number, o: bigint, arrivalMs: number, field: string): number | undefined {
    const arrived = hourStart(arrivalMs);
    for (let h = arrived > hourMs ? arrived : hourMs + HOUR_MS; ; h += HOUR_MS) {
      const through = this.#through(h, field);
      if (through === undefined) return h;
      // Frozen through this offset or later: that hour's record counts the event already.
      if (through >= o) return undefined;
    }
  }

  /** Buffers one event of the current batch. Resends within the batch are left to the script. */
  add(
    hourMs: number,
    field: string,
    op: AggregationOp,
    id: EventId,
    micros: number,
    eventTimeMs: number,
    /** Its record: the offset is read only for an event of a frozen hour (where it goes depends on it). */
    record: { readonly offset: string },
    /** The record's Kafka timestamp (when it arrived): where a late event goes. */
    arrivalMs: number,
    traceparent?: string,
  ): void {
    let hour: Map<string, Pending> | undefined;
    const through = this.#through(hourMs, field);
    if (through === undefined) {
      if (traceparent) {
        const links = this.#links.get(hourMs);
        if (!links) this.#links.set(hourMs, [traceparent]);
        else if (links.length < LINKS_PER_HOUR_PER_BATCH) links.push(traceparent);
      }
      // Events of a batch mostly share an hour: the last one's fields are at hand.
      if (hourMs === this.#lastHourMs) hour = this.#lastHour as Map<string, Pending>;
      else {
        hour = this.#batch.get(hourMs);
        if (!hour) {
          hour = new Map();
          this.#batch.set(hourMs, hour);
        }
        this.#lastHourMs = hourMs;
        this.#lastHour = hour;
      }
    } else {
      // The hour is frozen: the event was counted in it, or goes to the first later hour open at its offset.
      const o = BigInt(record.offset);
      const targetMs = o <= through ? undefined : this.#carryTarget(hourMs, o, arrivalMs, field);
      const key = `${hourMs}>${targetMs ?? ''}`;
      let moved = this.#moved.get(key);
      if (!moved) {
        moved = { hourMs, targetMs, fields: new Map() };
        this.#moved.set(key, moved);
      }
      hour = moved.fields;
    }
    let agg = hour.get(field);
    if (!agg) {
      agg = { op, ids: [], at: [], micros: [] };
      hour.set(field, agg);
    }
    if (through === undefined) agg.at.push(this.#hash(id));
    else agg.ids.push(id.id);
    agg.micros.push(micros);
    if (this.#maxEventTime === undefined || eventTimeMs > this.#maxEventTime)
      this.#maxEventTime = eventTimeMs;
  }

  /** Hashes an id into the batch's hash buffer: its position there. */
  #hash(id: EventId): number {
    const n = this.#hashCount;
    if (4 * (n + 1) > this.#hashes.length) {
      const grown = new Uint32Array(this.#hashes.length * 2);
      grown.set(this.#hashes);
      this.#hashes = grown;
    }
    if (id.idBytes !== undefined)
      hashLatin1Id(id.idBytes, id.idStart ?? 0, id.idEnd ?? 0, this.#hashes, 4 * n);
    else hashId(id.id, this.#hashes, 4 * n);
    this.#hashCount = n + 1;
    return n;
  }

  async commit(batch: { after: bigint | undefined; last: string; nowMs: number }): Promise<void> {
    const words = this.#hashes;
    const aggregates = (fields: Map<string, Pending>) =>
      [...fields].map(([field, p]) => ({
        field,
        op: p.op,
        ids: p.ids,
        micros: p.micros,
        ...(p.at.length ? { hashed: { words, at: p.at } } : {}),
      }));
    const groups: HourGroup[] = [...this.#batch].map(([hourMs, fields]) => ({
      hourMs,
      targetMs: hourMs,
      aggregates: aggregates(fields),
    }));
    for (const m of this.#moved.values()) {
      groups.push({ hourMs: m.hourMs, targetMs: m.targetMs, aggregates: aggregates(m.fields) });
    }
    const links = this.#links;
    const maxEventTime = this.#maxEventTime;
    let res: ApplyResult;
    try {
      res = await this.#o.windows.applyBatch(this.task, this.token, {
        offsets: { after: batch.after?.toString(), last: batch.last },
        groups,
        maxEventTimeMs: this.#maxEventTime,
        nowMs: batch.nowMs,
      });
    } catch (error) {
      // A target hour was frozen after all: this task's view of frozen hours is off. Read it again; the
      // batch is redelivered.
      if (isMeterlineError(error) && error.code === 'late_event') await this.#loadFrozen();
      throw error;
    } finally {
      this.abort();
    }
    if (maxEventTime !== undefined) this.#o.onBatchEventTime?.(this.task.partition, maxEventTime);
    // The batch is durable: a tracing sample that fails to land must not make it look unapplied.
    if (links.size && res.applied) {
      await this.#o.windows.traces
        .add(this.task, links)
        .catch((err: unknown) =>
          this.#o.logger.warn({ err, partition: this.task.partition }, 'could not keep trace links'),
        );
    }
    const s = this.#o.stats;
    s.applied += res.applied;
    s.duplicates += res.duplicates;
    s.carriedLate += res.carried;
    s.replayCounted += res.counted;
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
    this.#hashCount = 0;
    this.#lastHourMs = Number.NaN;
    this.#lastHour = undefined;
    this.#moved = new Map();
    this.#maxEventTime = undefined;
    this.#links = new Map();
  }

  async close(): Promise<void> {
    this.abort();
    // The partition's dedupe index (the largest thing a task holds) goes with the task.
    if (this.#task && this.#token) this.#o.windows.dedupe.release(this.#task, this.#token);
  }
}
