/**
 * The commit stage: a wall-clock punctuator over this instance's partition tasks. An hour closes when
 * the event-time watermark passes its end + grace, or when the wall clock passes its end + maxDelay,
 * whichever comes first. Closing freezes the hour in Redis, emits its records, then marks it emitted;
 * hours frozen but not yet marked (a crash in between) are emitted again: same id, same quantity.
 * An hour whose emit fails waits, kept in Redis, and is tried again every tick; once its AWS deadline
 * minus the submit margin is reached it is dead-lettered (emit_failed) instead, never dropped in silence.
 * Before its records go out, the frozen hour and the model state it left go to the window changelog
 * (window-changelog.ts): whatever may have been billed, a Redis rebuilt after a loss knows exactly.
 *
 * The watermark is the lowest event time over the topic's active partitions, minus the allowed
 * out-of-orderness. A partition without valid events for `idleTimeout` stops holding it back; when
 * every partition is idle, the watermark follows the wall clock.
 *
 * Freezing applies each dimension's metering model (metering-models.ts) to the hour's usage, and stores
 * the records and the model state they leave behind in one script: a crash can never apply a model twice.
 */
import type { Producer } from 'kafkajs';
import type { Contract } from '../config/customers.ts';
import type { Plan } from '../config/plan.ts';
import type { FailedRecord } from '../dlq/envelope.ts';
import { DlqPublisher } from '../dlq/publisher.ts';
import type { StreamTask } from '../engine/stream-task.ts';
import { isMeterlineError, type MeterlineError } from '../errors.ts';
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import type { Logger } from '../log.ts';
import { metrics, reportOldestHour } from '../observability/metrics.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  boundedLinks,
  inSpan,
  ROOT_CONTEXT,
  SpanKind,
  traceparentOf,
  tracingActive,
} from '../observability/tracing.ts';
import { aggregateField } from '../redis/keys.ts';
import { acceptanceDeadline, DEFAULT_ACCEPTANCE_WINDOW_MS, type MeteringApi } from '../submit/aws-window.ts';
import { Ledger } from '../submit/ledger.ts';
import { formatElapsed, HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore } from '../window/hourly-window-store.ts';
import {
  type ChangelogMessage,
  cutEmittedMessages,
  cutMessages,
  emittedMessages,
  frozenHourMessages,
} from '../window/window-changelog.ts';
import { type PartitionTime, TRACE_LINKS_PER_HOUR } from '../window/window-store.ts';
import { HourFinalizer } from './hour-finalizer.ts';
import { makeSubmissionRecord, type SubmissionRecord } from './submission-record.ts';

export interface EventTimeOptions {
  graceMs: number;
  maxDelayMs: number;
  maxOutOfOrdernessMs: number;
  idleTimeoutMs: number;
}

export interface CommitStageOptions extends EventTimeOptions {
  tasks: () => Promise<StreamTask[]>;
  /** Log end offset of every partition of the usage topic (all of them count for the watermark). */
  logEnds: () => Promise<Map<number, bigint>>;
  usageTopic: string;
  producer: Producer;
  submissionsTopic: string;
  /** The window changelog (compacted; partition p holds usage partition p's frozen hours). */
  changelogTopic: string;
  /** Where an hour goes when it cannot be emitted before its AWS deadline minus the submit margin. */
  failedTopic: string;
  plan: Plan;
  /** Subscribed customers (tenant ids): each gets hourly zero records on dimensions that ask for them. */
  subscribers: () => readonly Subscriber[] | Promise<readonly Subscriber[]>;
  /** A customer's contract, for contract-with-overage dimensions. */
  contractOf: (customer: string) => Contract | undefined;
  /**
   * Which tenants have an AWS identity now (asked once per punctuation). Records of the others are held,
   * frozen with their hour, until they have one or their deadline margin comes. Absent: all of them.
   */
  mapped?: () => Promise<(customer: string) => boolean>;
  /**
   * Tenants whose subscription is ending (unsubscribe-pending) and since when: AWS takes their last
   * records for about an hour after that, so their open hours are closed early, for them only.
   */
  flushes?: () => Promise<readonly { customer: string; atMs: number }[]>;
  api: MeteringApi;
  /**
   * A record must reach AWS this long before its deadline: older empty hours get no zero record, and an
   * hour still not emitted by then is dead-lettered.
   */
  submitMarginMs: number;
  logger: Logger;
  now?: () => number;
  /** Test hooks: called after an hour is frozen and after its records are on the topic. */
  faults?: { afterFreeze?: () => void; afterEmit?: () => void };
}

/** A subscribed customer: zero records start at the hour of `sinceMs`, or when the pipeline first ran. */
export interface Subscriber {
  customer: string;
  sinceMs?: number;
}

/** A customer␟dimension field that gets hourly zero records, from the hour `fromMs` on (undefined: from the topic-wide start). */
interface ZeroField {
  field: string;
  customer: string;
  fromMs: number | undefined;
}

export interface PartitionProgress extends PartitionTime {
  /** The partition's log end offset (the next offset to be written). */
  logEnd: bigint;
}

/**
 * The latest hour end that may close now. Pure, so the rule is testable on its own.
 *
 * A partition holds the watermark back while it is active: it had valid events within the idle timeout,
 * or it still has unread input (a backlog, e.g. after an outage). A backlog whose event time is unknown
 * holds everything back; only the max-delay bound closes hours then.
 */
export function closeBoundary(
  partitions: readonly PartitionProgress[],
  nowMs: number,
  o: EventTimeOptions,
): number {
  const active = partitions.filter(
    (p) =>
      (p.checkpoint ?? -1n) + 1n < p.logEnd ||
      (p.maxEventTime !== undefined && p.activeAt !== undefined && nowMs - p.activeAt <= o.idleTimeoutMs),
  );
  const watermark = active.length
    ? Math.min(...active.map((p) => p.maxEventTime ?? Number.NEGATIVE_INFINITY)) - o.maxOutOfOrdernessMs
    : nowMs - o.maxOutOfOrdernessMs;
  return Math.max(watermark - o.graceMs, nowMs - o.maxDelayMs);
}

/** The hours to close now, oldest first: hours with usage, and every hour in sequence when needed. */
export function hoursToClose(input: {
  withUsage: readonly number[];
  /** Close every hour, with or without usage (zero records, or units owed to the next hour). */
  sequential: boolean;
  closedThrough: number | undefined;
  boundary: number;
  /** The oldest hour AWS can still take: older empty hours are not worth a record. */
  oldestAcceptable: number;
}): number[] {
  const hours = new Set(input.withUsage);
  if (input.sequential) {
    const last = hourStart(input.boundary) - HOUR_MS;
    let h = input.closedThrough !== undefined ? input.closedThrough + HOUR_MS : (input.withUsage[0] ?? last);
    h = Math.max(h, input.oldestAcceptable);
    for (; h <= last; h += HOUR_MS) hours.add(h);
  }
  return [...hours].sort((a, b) => a - b);
}

export class CommitStage {
  /** `closeBoundary`: the latest hour end the last punctuation allowed to close. */
  readonly stats = {
    hoursFinalized: 0,
    recordsEmitted: 0,
    reEmitted: 0,
    closeBoundary: 0,
    /** Hours that could not be emitted in time (or whose frozen records were gone): on the DLQ instead. */
    hoursDeadLettered: 0,
  };
  readonly #finalizer: HourFinalizer;
  readonly #dlq: DlqPublisher;
  readonly #o: CommitStageOptions;
  readonly #now: () => number;
  #partitions = 0;
  /** The subscriber list the zero fields were built from (it changes as customers register and leave). */
  #subscribersKey = '';
  #subscribers: readonly Subscriber[] = [];
  /** partition → customer␟dimension fields that get zero records there. */
  #zeroFields = new Map<number, ZeroField[]>();
  #gapsCheckedAt = Number.NEGATIVE_INFINITY;
  #isMapped: (customer: string) => boolean = () => true;
  /** customer → since when its subscription is ending (this punctuation's view). */
  #ending = new Map<string, number>();
  /** `customer|hour` early closes already made (or found made) by this process. */
  #cutDone = new Set<string>();
  /** `partition:hour` of frozen hours already in the changelog (written once per process and hour). */
  #changelogged = new Set<string>();

  constructor(options: CommitStageOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#finalizer = new HourFinalizer(options);
    this.#dlq = new DlqPublisher(options.producer, options.failedTopic);
  }

  /** Zero records made, units held back by the AWS cap, allocations merged, entitlements missing. */
  get modelStats(): HourFinalizer['stats'] {
    return this.#finalizer.stats;
  }

  /** One punctuation over every task this instance owns. */
  readonly punctuate = async (): Promise<void> => {
    const tasks = await this.#o.tasks();
    if (!tasks.length) return;
    const store0 = tasks[0]?.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
    if (!store0) return;
    const logEnds = await this.#o.logEnds();
    this.#setZeroFields(logEnds.size, await this.#o.subscribers());
    this.#isMapped = this.#o.mapped ? await this.#o.mapped() : () => true;
    this.#ending = new Map((this.#o.flushes ? await this.#o.flushes() : []).map((f) => [f.customer, f.atMs]));
    const times = await store0.windows.partitionTimes(this.#o.usageTopic, logEnds.size);
    for (const t of times) {
      const lag = (logEnds.get(t.partition) ?? 0n) - ((t.checkpoint ?? -1n) + 1n);
      metrics.processorLag.set({ partition: String(t.partition) }, Number(lag > 0n ? lag : 0n));
    }
    const now = this.#now();
    const progress = times.map((t) => ({ ...t, logEnd: logEnds.get(t.partition) ?? 0n }));
    const boundary = closeBoundary(progress, now, this.#o);
    this.stats.closeBoundary = boundary;
    const zeroFrom = this.#zeroFields.size
      ? await store0.windows.zeroRecordsFrom(this.#o.usageTopic, hourStart(now))
      : undefined;
    for (const task of tasks) {
      await task
        .exclusive(async () => {
          // Redis must still hold what this task applied: a Redis that fell behind (failover, restore)
          // would freeze an hour from part of its usage. The state check or the next batch recovers it.
          const health = await task.verifyHeld();
          if (health !== 'ok') {
            this.#o.logger.warn(
              { partition: task.id.partition, health },
              'not closing hours: Redis is not in step',
            );
            return;
          }
          // A partition re-reading its input after a state loss closes nothing until the replay reached
          // where processing stood when the loss was found: an hour closed halfway would freeze short.
          const { replayUntil, holdUntil, checkpoint } = task.restorePoint;
          const hold = holdUntil ?? replayUntil;
          const replaying = hold !== undefined && (checkpoint ?? -1n) + 1n < hold;
          await this.#closeDue(
            task.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS),
            this.#boundaryAtTurn(task.id.partition, checkpoint, progress, boundary, now),
            zeroFrom,
            replaying,
          );
        })
        .catch((error: unknown) => {
          if (isMeterlineError(error) && (error.code === 'fenced' || error.code === 'state_lost')) {
            this.#o.logger.warn(
              { partition: task.id.partition, code: error.code },
              'cannot finalize here now',
            );
            return;
          }
          throw error;
        });
    }
    await this.#reportOldestOpenHour(tasks);
    await this.#checkGaps(store0, zeroFrom, now);
  };

  /**
   * The boundary for one task's hours, at its turn. Batches that landed on the partition after the read
   * (and before this turn) are not in it: were the partition read as idle, the watermark would be the wall
   * clock, and a past hour would be frozen from the first of those batches with the rest of its usage
   * carried forward. So input applied since the read counts as unread at the read (a backlog holds the
   * watermark back), and the lower boundary wins.
   */
  #boundaryAtTurn(
    partition: number,
    checkpoint: bigint | undefined,
    progress: readonly PartitionProgress[],
    boundary: number,
    now: number,
  ): number {
    const read = progress.find((p) => p.partition === partition);
    if (!read || checkpoint === undefined) return boundary;
    if (read.checkpoint !== undefined && checkpoint <= read.checkpoint) return boundary;
    const unread = progress.map((p) =>
      p.partition === partition && p.logEnd < checkpoint + 1n ? { ...p, logEnd: checkpoint + 1n } : p,
    );
    return Math.min(boundary, closeBoundary(unread, now, this.#o));
  }

  /** The oldest hour this instance still holds open or unemitted: the processor's side of the deadline gauge. */
  async #reportOldestOpenHour(tasks: StreamTask[]): Promise<void> {
    let oldest: number | undefined;
    let oldestWaiting: number | undefined;
    const waiting: [partition: string, hours: number][] = [];
    const held: [partition: string, records: number][] = [];
    let oldestHeld: number | undefined;
    for (const task of tasks) {
      const store = task.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
      const hour = await store.windows.oldestUnsubmittedHour(store.task);
      metrics.openWindows.set(
        { partition: String(store.task.partition) },
        await store.windows.redis.zcard(store.windows.keys.partition(store.task).openHours()),
      );
      if (hour !== undefined && (oldest === undefined || hour < oldest)) oldest = hour;
      const pending = await store.windows.pendingEmits(store.task);
      waiting.push([String(store.task.partition), pending.length]);
      const heldHere = await store.windows.heldRecords(store.task);
      held.push([String(store.task.partition), heldHere.size]);
      for (const key of heldHere.keys()) {
        const h = Number(key.slice(0, key.indexOf('|')));
        if (oldestHeld === undefined || h < oldestHeld) oldestHeld = h;
      }
      for (const h of pending) if (oldestWaiting === undefined || h < oldestWaiting) oldestWaiting = h;
    }
    const now = this.#now();
    reportOldestHour('processor', oldest, this.#o.api, now);
    // Reset and set with no await in between: partitions this instance no longer owns drop out (a stale
    // count would keep the alert firing), and a scrape never sees the owned ones missing.
    metrics.pendingEmitHours.reset();
    for (const [partition, hours] of waiting) metrics.pendingEmitHours.set({ partition }, hours);
    metrics.heldRecords.reset();
    for (const [partition, records] of held) metrics.heldRecords.set({ partition }, records);
    metrics.heldDeadLetterInSeconds.reset();
    if (oldestHeld !== undefined) {
      const at = acceptanceDeadline(this.#o.api, oldestHeld) - this.#o.submitMarginMs;
      metrics.heldDeadLetterInSeconds.set(Math.max(0, at - now) / 1000);
    }
    metrics.oldestPendingEmitHourAgeSeconds.set(
      oldestWaiting === undefined ? 0 : Math.max(0, now - oldestWaiting) / 1000,
    );
  }

  /** Zero records of a customer are made on the partition its events go to, so they meet its usage. */
  #setZeroFields(partitions: number, subscribers: readonly Subscriber[]): void {
    const key = subscribers.map((s) => `${s.customer}@${s.sinceMs ?? ''}`).join('\n');
    if (partitions === this.#partitions && key === this.#subscribersKey) return;
    this.#partitions = partitions;
    this.#subscribersKey = key;
    this.#subscribers = subscribers;
    this.#zeroFields = new Map();
    const dims = [...this.#o.plan.dimensions.values()].filter((d) => d.zeroRecords);
    if (!dims.length) return;
    for (const { customer, sinceMs } of subscribers) {
      const p = partitionOfCustomer(customer, partitions);
      const list = this.#zeroFields.get(p) ?? [];
      const fromMs = sinceMs === undefined ? undefined : hourStart(sinceMs);
      for (const d of dims) list.push({ field: aggregateField(customer, d.name), customer, fromMs });
      this.#zeroFields.set(p, list);
    }
  }

  /**
   * `zeroFrom`: the hour zero records start at for subscribers without a subscription time. `replaying`:
   * only hours frozen before are emitted.
   */
  async #closeDue(
    store: HourlyWindowStore,
    boundary: number,
    zeroFrom: number | undefined,
    replaying: boolean,
  ): Promise<void> {
    const task = store.task;
    const w = store.windows;
    for (const [hour, customer] of await w.pendingCuts(task)) {
      if (!(await this.#emitCut(store, hour, customer))) return;
    }
    for (const hour of await w.pendingEmits(task)) {
      this.stats.reEmitted += 1;
      // Not emitted (the submission topic cannot be written): this task's later hours would fail alike.
      // Other tasks still get their turn, so their hours at risk are dead-lettered in time.
      if ((await this.#emit(store, hour)) === undefined) return;
    }
    if (replaying) return;
    const allZero = (this.#zeroFields.get(task.partition) ?? []).map((z) => ({
      field: z.field,
      customer: z.customer,
      fromMs: z.fromMs ?? (zeroFrom as number),
    }));
    if (!(await this.#flush(store, allZero))) return;
    // A customer whose subscription is ending gets no zero records after the hour it ended in.
    const zeroFields = allZero.map((z) => {
      const at = this.#ending.get(z.customer);
      return at === undefined ? z : { ...z, untilMs: hourStart(at) };
    });
    const withUsage = await w.hoursEndingBy(task, boundary);
    const sequential = zeroFields.length > 0 || (await w.hasDue(task));
    const closed = sequential ? await w.closedThrough(task) : undefined;
    // A partition's first sequence starts at its earliest subscription (or the topic-wide start).
    // A loop, not Math.min(...): a fleet of subscribers times dimensions can exceed the argument limit.
    const firstZero = zeroFields.length
      ? zeroFields.reduce((min, z) => Math.min(min, z.fromMs), Number.POSITIVE_INFINITY)
      : undefined;
    const hours = hoursToClose({
      withUsage,
      sequential,
      closedThrough: closed ?? (firstZero === undefined ? undefined : firstZero - HOUR_MS),
      boundary,
      oldestAcceptable: this.#oldestAcceptableHour(),
    });
    for (const hour of hours) {
      const zero = zeroFields
        .filter((z) => z.fromMs <= hour && !('untilMs' in z && hour > z.untilMs))
        .map((z) => z.field);
      if (!(await this.#finalizeHour(store, hour, zero))) return;
    }
  }

  /**
   * The final flush: for each customer of this partition whose subscription is ending, while AWS still
   * takes its records (an hour after unsubscribe-pending), closes its open hours up to now for it alone,
   * and emits them. Its later usage of those hours is carried to the next one. Returns false when a cut
   * could not be emitted (it is tried again next tick).
   */
  async #flush(
    store: HourlyWindowStore,
    zeroFields: readonly { field: string; customer: string; fromMs: number }[],
  ): Promise<boolean> {
    if (!this.#ending.size) return true;
    const task = store.task;
    const now = this.#now();
    const open = (await store.windows.hoursEndingBy(task, hourStart(now) + HOUR_MS)).filter(
      (h) => h <= hourStart(now),
    );
    const hours = [...new Set([...open, hourStart(now)])].sort((a, b) => a - b);
    for (const [customer, atMs] of this.#ending) {
      if (partitionOfCustomer(customer, this.#partitions) !== task.partition) continue;
      if (now > atMs + HOUR_MS) continue;
      for (const hour of hours) {
        if (hour > hourStart(atMs) + HOUR_MS) continue;
        const memo = `${customer}|${hour}`;
        if (this.#cutDone.has(memo)) continue;
        const zero = zeroFields
          .filter((z) => z.customer === customer && z.fromMs <= hour)
          .map((z) => z.field);
        const res = await this.#finalizer.cut(store.windows, task, store.token, hour, customer, zero);
        if (this.#cutDone.size > 10_000) this.#cutDone.clear();
        this.#cutDone.add(memo);
        if (res === 'cut') {
          await store.noteCut(hour);
          this.#o.logger.info(
            { partition: task.partition, customer, hour: hourIso(hour) },
            "subscription ending: the customer's hour is closed now, for it alone",
          );
          if (!(await this.#emitCut(store, hour, customer))) return false;
        }
      }
    }
    return true;
  }

  /** Emits one customer's early-closed hour: changelog first, then the submission topic. */
  async #emitCut(store: HourlyWindowStore, hourMs: number, customer: string): Promise<boolean> {
    const task = store.task;
    const cut = await store.windows.frozenCut(task, hourMs, customer);
    if (!cut) {
      this.#o.logger.error(
        { partition: task.partition, customer, hour: hourIso(hourMs) },
        'the records of an early-closed hour were gone before they were emitted',
      );
      await store.windows.markCutEmitted(task, store.token, hourMs, customer);
      return true;
    }
    const now = this.#now();
    const records = this.#finalizer
      .parse(cut.records)
      .map((f) => makeSubmissionRecord({ ...f, hourMs, api: this.#o.api, finalizedAtMs: now }));
    try {
      await this.#toChangelog(store, cutMessages(task, cut));
      if (records.length) {
        await this.#toSubmissions(records);
      }
    } catch (error) {
      if (!isMeterlineError(error) || error.code !== 'kafka_error' || !error.retriable) throw error;
      this.#o.logger.warn(
        { partition: task.partition, customer, hour: hourIso(hourMs), code: error.code },
        'an early-closed hour could not be emitted: it is tried again next tick',
      );
      return false;
    }
    await this.#toChangelog(store, cutEmittedMessages(task, hourMs, customer)).catch(() => undefined);
    await store.windows.markCutEmitted(task, store.token, hourMs, customer);
    this.stats.recordsEmitted += records.length;
    return true;
  }

  /**
   * Freezes and emits one hour. With tracing on this is the `finalize` span: it links to a sample of the
   * hour's events (their producer spans), and its context is frozen with the records, so the worker's
   * spans and the AWS call continue this trace, even after a crash and a re-emission. Returns false when
   * the hour was frozen but could not be emitted (it waits for the next tick).
   */
  async #finalizeHour(store: HourlyWindowStore, hour: number, zero: string[]): Promise<boolean> {
    const task = store.task;
    if (!tracingActive()) {
      await this.#finalizer.freeze(store.windows, task, store.token, hour, zero);
      await store.noteFrozen(hour);
      this.#o.faults?.afterFreeze?.();
      return (await this.#emit(store, hour)) !== undefined;
    }
    const links = boundedLinks(await store.windows.traceLinks(task, hour), TRACE_LINKS_PER_HOUR);
    return inSpan(
      `finalize ${this.#o.usageTopic}`,
      {
        kind: SpanKind.INTERNAL,
        links,
        attributes: {
          [ATTR.windowStart]: hourIso(hour),
          [ATTR.messagingDestination]: this.#o.submissionsTopic,
          [ATTR.messagingPartition]: String(task.partition),
        },
      },
      ROOT_CONTEXT,
      async (span) => {
        const frozen = await this.#finalizer.freeze(
          store.windows,
          task,
          store.token,
          hour,
          zero,
          traceparentOf(span),
        );
        await store.noteFrozen(hour);
        this.#o.faults?.afterFreeze?.();
        const emitted = await this.#emit(store, hour);
        if (emitted === undefined) span.setAttribute(ATTR.outcome, 'emit_pending');
        else span.setAttribute(ATTR.records, emitted);
        if (!frozen) span.setAttribute(ATTR.outcome, 'already_frozen');
        return emitted !== undefined;
      },
    );
  }

  /**
   * How many subscribed customers with hourly zero records have no accepted record for the latest hour
   * that should be billed by now (closed at the latest after maxDelay, plus an hour for the worker).
   * Checked at most once a minute.
   */
  async #checkGaps(store: HourlyWindowStore, zeroFrom: number | undefined, now: number): Promise<void> {
    if (!this.#zeroFields.size || now - this.#gapsCheckedAt < 60_000) return;
    this.#gapsCheckedAt = now;
    const due = hourStart(now - this.#o.maxDelayMs) - 2 * HOUR_MS;
    const since = new Map<string, number>();
    for (const { customer, sinceMs } of this.#subscribers) {
      since.set(customer, sinceMs === undefined ? (zeroFrom ?? now) : hourStart(sinceMs));
    }
    const expected = [...since].filter(([, from]) => from <= due).map(([customer]) => customer);
    const ledger = new Ledger(store.windows.redis, store.windows.keys);
    const last = await ledger.lastAcceptedOf(expected);
    const behind = last.filter((h) => h === undefined || h < due).length;
    metrics.customersBehind.set(behind);
  }

  #oldestAcceptableHour(): number {
    const now = this.#now();
    let h = hourStart(now) - DEFAULT_ACCEPTANCE_WINDOW_MS[this.#o.api];
    while (acceptanceDeadline(this.#o.api, h) - this.#o.submitMarginMs <= now) h += HOUR_MS;
    return h;
  }

  /**
   * Puts an hour's frozen records on the submission topic, then marks the hour emitted (only then do its
   * frozen records start to expire). Returns how many records were emitted, or undefined when the topic
   * did not take them: the hour waits for the next tick (or is dead-lettered once at risk, returning 0).
   */
  async #emit(store: HourlyWindowStore, hourMs: number): Promise<number | undefined> {
    const task = store.task;
    const now = this.#now();
    const hour = await store.windows.frozenHour(task, hourMs);
    // A frozen hour always holds its `__hour` field: no hash means its records are gone, not 0.
    if (!hour) return this.#deadLetterLostHour(store, hourMs);
    const all: SubmissionRecord[] = [];
    for (const frozen of this.#finalizer.parse(hour.records)) {
      all.push(makeSubmissionRecord({ ...frozen, hourMs, api: this.#o.api, finalizedAtMs: now }));
    }
    // The changelog first: once any record may be on the submission topic, a Redis rebuilt after a loss
    // must know the hour is frozen, with exactly these records and the model state they left.
    const memo = `${task.partition}:${hourMs}`;
    if (!this.#changelogged.has(memo)) {
      try {
        await this.#toChangelog(store, frozenHourMessages(task, hour));
      } catch (error) {
        if (!isMeterlineError(error) || error.code !== 'kafka_error' || !error.retriable) throw error;
        return this.#emitFailed(store, hourMs, all, error);
      }
      if (this.#changelogged.size > 10_000) this.#changelogged.clear();
      this.#changelogged.add(memo);
    }
    // Records of tenants without an AWS identity yet are held; those sent (or dead-lettered) before are done.
    const done = await store.windows.sentFields(task, hourMs);
    const records: SubmissionRecord[] = [];
    const held: SubmissionRecord[] = [];
    for (const r of all) {
      if (done.has(aggregateField(r.customer, r.dimension))) continue;
      (this.#isMapped(r.customer) ? records : held).push(r);
    }
    if (held.length) {
      const released = await this.#hold(store, hourMs, held);
      if (released === undefined) return undefined;
    }
    if (records.length) {
      try {
        await this.#toSubmissions(records);
      } catch (error) {
        if (!isMeterlineError(error) || error.code !== 'kafka_error' || !error.retriable) throw error;
        return this.#emitFailed(store, hourMs, records, error);
      }
    }
    this.#o.faults?.afterEmit?.();
    if (records.length) metrics.finalizeLagSeconds.observe((this.#now() - (hourMs + HOUR_MS)) / 1000);
    this.stats.recordsEmitted += records.length;
    if (held.length && !(await this.#heldDone(store, hourMs, held))) {
      // Part of the hour still waits for its tenants: what went out is noted, the hour stays pending.
      await store.windows.markSent(
        task,
        hourMs,
        records.map((r) => aggregateField(r.customer, r.dimension)),
      );
      return records.length;
    }
    await this.#changelogEmitted(store, hourMs);
    // Records held before and released now are held no more.
    await store.windows.releaseHeld(
      task,
      hourMs,
      records.map((r) => aggregateField(r.customer, r.dimension)),
    );
    await store.windows.markEmitted(task, store.token, hourMs);
    if (done.size || held.length) await store.windows.forgetSent(task, hourMs);
    this.#changelogged.delete(memo);
    this.stats.hoursFinalized += 1;
    if (records.length) {
      this.#o.logger.info(
        { partition: task.partition, hour: hourIso(hourMs), records: records.length },
        'hour finalized and emitted',
      );
    }
    return records.length;
  }

  /**
   * Holds records whose tenant has no AWS identity yet: they wait, frozen with their hour, and go out at
   * their own hour as soon as the tenant is mapped (registration, a lifecycle event, the customers file).
   * Once the hour's AWS deadline minus the submit margin is reached they are dead-lettered instead
   * (customer_mapping_missing, with how long they were held), so a redrive can still bill them. Returns
   * how many were dead-lettered (0 while they wait), undefined when the DLQ could not be written.
   */
  async #hold(
    store: HourlyWindowStore,
    hourMs: number,
    held: readonly SubmissionRecord[],
  ): Promise<number | undefined> {
    const task = store.task;
    const now = this.#now();
    const fields = held.map((r) => aggregateField(r.customer, r.dimension));
    const since = await store.windows.heldSince(task, hourMs, fields, now);
    const riskAt = acceptanceDeadline(this.#o.api, hourMs) - this.#o.submitMarginMs;
    if (now <= riskAt) {
      const fresh = held.filter((r) => since.get(aggregateField(r.customer, r.dimension)) === now);
      if (fresh.length) {
        this.#o.logger.warn(
          {
            partition: task.partition,
            hour: hourIso(hourMs),
            tenants: [...new Set(fresh.map((r) => r.customer))].slice(0, 20),
            records: fresh.length,
            deadLetterAt: new Date(riskAt).toISOString(),
          },
          'usage of tenants without an AWS identity is held until they register (or the deadline margin)',
        );
      }
      return 0;
    }
    const at = new Date(now).toISOString();
    const envelopes = held.map((record): FailedRecord => {
      const from = since.get(aggregateField(record.customer, record.dimension)) ?? now;
      return {
        version: 1,
        stage: 'commit',
        reason: 'customer_mapping_missing',
        detail: `no AWS identity for tenant "${record.customer}" (not in the customers file, not registered): held ${formatElapsed(now - from)} from ${new Date(from).toISOString()}, dead-lettered at the deadline margin; map the tenant and redrive before ${record.deadline}`,
        retriable: true,
        failedAt: at,
        record,
        heldSince: new Date(from).toISOString(),
        deadline: record.deadline,
        ...(record.traceparent ? { traceContext: { traceparent: record.traceparent } } : {}),
      };
    });
    if (!(await this.#deadLetter(envelopes, { partition: task.partition, hour: hourIso(hourMs) })))
      return undefined;
    await store.windows.markSent(task, hourMs, fields);
    this.#o.logger.error(
      { partition: task.partition, hour: hourIso(hourMs), records: held.length },
      'held usage reached its deadline margin without a tenant mapping: dead-lettered (customer_mapping_missing)',
    );
    return held.length;
  }

  /** Whether every held record of the hour was dead-lettered just now (nothing of the hour waits). */
  async #heldDone(
    store: HourlyWindowStore,
    hourMs: number,
    held: readonly SubmissionRecord[],
  ): Promise<boolean> {
    const done = await store.windows.sentFields(store.task, hourMs);
    return held.every((r) => done.has(aggregateField(r.customer, r.dimension)));
  }

  /**
   * The submission topic did not take an hour's records. The hour waits, its frozen records kept from
   * expiring, and is tried again every tick until its AWS deadline minus the submit margin. From then on
   * it goes to the failed-records topic, one envelope per record, so it can be redriven in the time left.
   * Returns 0 once dead-lettered, undefined while it waits.
   */
  async #emitFailed(
    store: HourlyWindowStore,
    hourMs: number,
    records: readonly SubmissionRecord[],
    error: MeterlineError,
  ): Promise<number | undefined> {
    const task = store.task;
    await store.windows.keepFrozen(task, hourMs);
    const now = this.#now();
    const riskAt = acceptanceDeadline(this.#o.api, hourMs) - this.#o.submitMarginMs;
    const where = { partition: task.partition, hour: hourIso(hourMs), records: records.length };
    if (now <= riskAt) {
      this.#o.logger.warn(
        { ...where, code: error.code, deadLetterAt: new Date(riskAt).toISOString() },
        'the hour could not be emitted: it waits, and is tried again next tick',
      );
      return undefined;
    }
    const at = new Date(now).toISOString();
    const envelopes = records.map(
      (record): FailedRecord => ({
        version: 1,
        stage: 'commit',
        reason: 'emit_failed',
        detail: `the frozen records of ${this.#o.usageTopic}/${task.partition} hour ${hourIso(hourMs)} could not be put on ${this.#o.submissionsTopic} by ${new Date(riskAt).toISOString()} (the AWS deadline minus the submit margin): redrive before ${record.deadline}`,
        retriable: true,
        failedAt: at,
        record,
        lastError: { code: error.code, message: error.message, at },
        deadline: record.deadline,
        ...(record.traceparent ? { traceContext: { traceparent: record.traceparent } } : {}),
      }),
    );
    if (!(await this.#deadLetter(envelopes, where))) return undefined;
    await this.#changelogEmitted(store, hourMs);
    await store.windows.markEmitted(task, store.token, hourMs);
    this.stats.hoursDeadLettered += 1;
    this.#o.logger.error(
      where,
      'the hour could not be emitted before its AWS deadline was at risk: its records are on the failed-records topic (emit_failed), redrive them',
    );
    return 0;
  }

  /**
   * A waiting hour whose frozen records are gone (given a TTL at freeze by an older version, evicted,
   * deleted) is never marked emitted as if it held none: one envelope names the partition and hour.
   */
  async #deadLetterLostHour(store: HourlyWindowStore, hourMs: number): Promise<number | undefined> {
    const task = store.task;
    const where = { partition: task.partition, hour: hourIso(hourMs) };
    const envelope: FailedRecord = {
      version: 1,
      stage: 'commit',
      reason: 'frozen_hour_lost',
      detail: `the frozen records of ${this.#o.usageTopic}/${task.partition} hour ${hourIso(hourMs)} were gone from Redis before they were emitted: unless ${this.#o.submissionsTopic} holds them already, that hour was not billed`,
      retriable: false,
      failedAt: new Date(this.#now()).toISOString(),
    };
    if (!(await this.#deadLetter([envelope], where))) return undefined;
    await store.windows.markEmitted(task, store.token, hourMs);
    this.stats.hoursDeadLettered += 1;
    this.#o.logger.error(
      where,
      'the frozen records of a waiting hour were gone: dead-lettered (frozen_hour_lost)',
    );
    return 0;
  }

  /** Puts frozen records on the submission topic, keyed by customer, with the finalize span's context. */
  async #toSubmissions(records: readonly SubmissionRecord[]): Promise<void> {
    await this.#o.producer.send({
      topic: this.#o.submissionsTopic,
      acks: -1,
      messages: records.map((r) => ({
        key: r.customer,
        value: JSON.stringify(r),
        ...(r.traceparent ? { headers: { traceparent: r.traceparent } } : {}),
      })),
    });
  }

  /** Sends to the task's changelog partition, in one call (one batch: the state lands with its hour). */
  async #toChangelog(store: HourlyWindowStore, messages: readonly ChangelogMessage[]): Promise<void> {
    await this.#o.producer.send({
      topic: this.#o.changelogTopic,
      acks: -1,
      messages: messages.map((m) => ({ key: m.key, value: m.value, partition: store.task.partition })),
    });
  }

  /**
   * Notes in the changelog that the hour left (so a rebuilt Redis does not emit it again). Only an
   * optimisation: without it a rebuild re-emits the hour, same ids and quantities, which is harmless.
   */
  async #changelogEmitted(store: HourlyWindowStore, hourMs: number): Promise<void> {
    await this.#toChangelog(store, emittedMessages(store.task, hourMs)).catch((err: unknown) =>
      this.#o.logger.warn(
        { err, partition: store.task.partition, hour: hourIso(hourMs) },
        'could not note the emitted hour in the changelog: a rebuild after a Redis loss would emit it again',
      ),
    );
  }

  /** False when the failed-records topic cannot be written either: the hour keeps waiting. */
  async #deadLetter(envelopes: readonly FailedRecord[], where: Record<string, unknown>): Promise<boolean> {
    try {
      await this.#dlq.publish(envelopes);
    } catch (error) {
      if (!isMeterlineError(error) || error.code !== 'kafka_error' || !error.retriable) throw error;
      this.#o.logger.error(
        { ...where, code: error.code },
        'the hour could not be dead-lettered either: it waits, and is tried again next tick',
      );
      return false;
    }
    for (const e of envelopes) metrics.deadLetters.inc({ stage: e.stage, reason: e.reason });
    return true;
  }
}
