/**
 * The commit stage: a wall-clock punctuator over this instance's partition tasks. An hour closes when
 * the event-time watermark passes its end + grace, or when the wall clock passes its end + maxDelay,
 * whichever comes first (close-boundary.ts). Closing freezes the hour in Redis (hour-finalizer.ts: each
 * dimension's metering model applied, records and model state stored in one script, so a crash can never
 * apply a model twice), then emits it (hour-emitter.ts: the window changelog first, then the submission
 * topic, then the hour is marked emitted; held usage, emit failures and lost hours are never silent).
 * Hours frozen but not yet marked (a crash in between) are emitted again: same id, same quantity. Buyers
 * whose subscription ends get their open hours closed early, for them alone (final-flush.ts).
 */
import type { Producer } from 'kafkajs';
import type { Contract } from '../config/customers.ts';
import type { Plan } from '../config/plan.ts';
import type { StreamTask } from '../engine/stream-task.ts';
import { isMeterlineError } from '../errors.ts';
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import type { Logger } from '../log.ts';
import {
  acceptanceDeadline,
  DEFAULT_ACCEPTANCE_WINDOW_MS,
  type MeteringApi,
} from '../metering/aws-window.ts';
import { metrics } from '../observability/metrics.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  boundedLinks,
  inSpan,
  ROOT_CONTEXT,
  SpanKind,
  traceparentOf,
  tracingActive,
} from '../observability/tracing.ts';
import { aggregateField, cutScope } from '../redis/keys.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore } from '../state/hourly-window-store.ts';
import type { Ledger } from '../state/ledger.ts';
import { TRACE_LINKS_PER_HOUR } from '../state/trace-links.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import {
  closeBoundary,
  type EventTimeOptions,
  hoursToClose,
  nextCloseAt,
  type PartitionProgress,
} from './close-boundary.ts';
import { reportCommitGauges } from './commit-gauges.ts';
import { type Ending, FinalFlush } from './final-flush.ts';
import { HourEmitter } from './hour-emitter.ts';
import { HourFinalizer } from './hour-finalizer.ts';

export interface CommitStageOptions extends EventTimeOptions {
  tasks: () => Promise<StreamTask[]>;
  /** Tasks closed at once in a punctuation (default 1). */
  concurrency?: number;
  /** Log end offset of every partition of the usage topic (all of them count for the watermark). */
  logEnds: () => Promise<Map<number, bigint>>;
  usageTopic: string;
  producer: Producer;
  /** The hours AWS accepted, per customer (for the customers-behind gauge). */
  ledger: Pick<Ledger, 'lastAcceptedOf'>;
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
   * Which tenants have an AWS identity now, per product (asked once per punctuation, with a dimension of
   * the product). Records of the others are held, frozen with their hour, until they have one or their
   * deadline margin comes. Absent: all of them.
   */
  mapped?: () => Promise<(customer: string, dimension: string) => boolean>;
  /**
   * Subscriptions that are ending (unsubscribe-pending) and since when: a tenant's product, or the whole
   * tenant when no product is named. AWS takes their last records for about an hour after that, so their
   * open hours are closed early, for them only.
   */
  flushes?: () => Promise<readonly Ending[]>;
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
  /** The product subscribed to: zero records go to its dimensions only. Absent: every product's. */
  productCode?: string;
}

/** A customer␟dimension field that gets hourly zero records, from the hour `fromMs` on (undefined: from the topic-wide start). */
interface ZeroField {
  field: string;
  customer: string;
  /** The product of the field's dimension. */
  productCode: string;
  fromMs: number | undefined;
}

/**
 * Predictions of one hour end's close that may prove wrong (new input kept a partition active) before
 * that hour waits for the interval again: early looks never multiply the Redis load.
 */
const MISSED_LOOKS_PER_HOUR = 3;

export class CommitStage {
  /** `closeBoundary`: the latest hour end the last punctuation allowed to close. */
  readonly stats = {
    hoursFinalized: 0,
    recordsEmitted: 0,
    reEmitted: 0,
    closeBoundary: 0,
    /** Hours that could not be emitted in time (or whose frozen records were gone): on the DLQ instead. */
    hoursDeadLettered: 0,
    /**
     * Punctuations run; those run at an hour's predicted close (`nextCloseAt`), and those among them
     * that found the hour not closable after all.
     */
    punctuations: 0,
    predictedLooks: 0,
    missedLooks: 0,
    /** Looks a committed batch asked for: it moved the watermark past an hour end. */
    batchWakes: 0,
  };
  readonly #finalizer: HourFinalizer;
  readonly #emitter: HourEmitter;
  readonly #finalFlush: FinalFlush;
  readonly #o: CommitStageOptions;
  readonly #now: () => number;
  #partitions = 0;
  /** The subscriber list the zero fields were built from (it changes as customers register and leave). */
  #subscribersKey = '';
  #subscribers: readonly Subscriber[] = [];
  /** partition → customer␟dimension fields that get zero records there. */
  #zeroFields = new Map<number, ZeroField[]>();
  #gapsCheckedAt = Number.NEGATIVE_INFINITY;
  /** cut scope (`cutScope`) → the subscription ending and since when (this punctuation's view). */
  #ending = new Map<string, Ending>();
  /** The hour end the predictions aim at, and how many of them proved wrong. */
  #aim = { hourEnd: 0, missed: 0 };
  /** The clock time the last punctuation predicted the next close at. */
  #lookAt: number | undefined;
  /**
   * The partitions' progress as the last punctuation read it, moved on by the batches committed since,
   * and the boundary it gives: batches that move it past an hour end wake the stage.
   */
  #progress: PartitionProgress[] | undefined;
  #estimate = Number.NEGATIVE_INFINITY;
  /** Hour starts a batch woke the stage for (once each). */
  #wokenFor = new Set<number>();

  constructor(options: CommitStageOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#finalizer = new HourFinalizer(options);
    this.#emitter = new HourEmitter({ ...options, now: this.#now }, this.#finalizer, this.stats);
    this.#finalFlush = new FinalFlush(this.#finalizer, this.#emitter, options.logger, this.#now);
  }

  /** Zero records made, units held back by the AWS cap, allocations merged, entitlements missing. */
  get modelStats(): HourFinalizer['stats'] {
    return this.#finalizer.stats;
  }

  /**
   * One punctuation over every task this instance owns. Returns the ms until the next hour becomes
   * closable if only the clock moves (close-boundary.ts `nextCloseAt`), so the schedule looks again then
   * rather than up to a whole interval later; undefined when no such instant is known.
   */
  readonly punctuate = async (): Promise<number | undefined> => {
    this.stats.punctuations += 1;
    const predicted = this.#lookAt !== undefined && this.#now() >= this.#lookAt;
    if (predicted) this.stats.predictedLooks += 1;
    this.#lookAt = undefined;
    const tasks = await this.#o.tasks();
    if (!tasks.length) return undefined;
    const store0 = tasks[0]?.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
    if (!store0) return undefined;
    const logEnds = await this.#o.logEnds();
    this.#setZeroFields(logEnds.size, await this.#o.subscribers());
    this.#emitter.isMapped = this.#o.mapped ? await this.#o.mapped() : () => true;
    this.#ending = new Map(
      (this.#o.flushes ? await this.#o.flushes() : []).map((f) => [cutScope(f.customer, f.productCode), f]),
    );
    const times = await store0.windows.partitionTimes(this.#o.usageTopic, logEnds.size);
    for (const t of times) {
      const lag = (logEnds.get(t.partition) ?? 0n) - ((t.checkpoint ?? -1n) + 1n);
      metrics.processorLag.set({ partition: String(t.partition) }, Number(lag > 0n ? lag : 0n));
    }
    const now = this.#now();
    const progress = times.map((t) => ({ ...t, logEnd: logEnds.get(t.partition) ?? 0n }));
    const boundary = closeBoundary(progress, now, this.#o);
    this.stats.closeBoundary = boundary;
    this.#progress = progress;
    this.#estimate = boundary;
    if (predicted && boundary < this.#aim.hourEnd) {
      this.stats.missedLooks += 1;
      this.#aim.missed += 1;
    }
    const zeroFrom = this.#zeroFields.size
      ? await store0.windows.zeroRecordsFrom(this.#o.usageTopic, hourStart(now))
      : undefined;
    // Tasks are independent (their own partition, keys and changelog partition): a few close at once, so
    // the last partition's hour is not frozen and emitted only after every other's.
    const closeTask = (task: StreamTask) =>
      task
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
            checkpoint,
          );
        })
        .catch((error: unknown) => {
          // store_behind: Redis fell behind this task after the health check above (a failover); the
          // task's next batch re-claims the partition and replays, and its hours close after that.
          if (
            isMeterlineError(error) &&
            (error.code === 'fenced' || error.code === 'state_lost' || error.code === 'store_behind')
          ) {
            this.#o.logger.warn(
              { partition: task.id.partition, code: error.code },
              'cannot finalize here now',
            );
            return;
          }
          throw error;
        });
    const queue = [...tasks];
    const failures: unknown[] = [];
    const lanes = Array.from({ length: Math.min(this.#o.concurrency ?? 1, queue.length) }, async () => {
      for (let task = queue.shift(); task; task = queue.shift()) {
        await closeTask(task).catch((error: unknown) => failures.push(error));
      }
    });
    await Promise.all(lanes);
    if (failures.length) throw failures[0];
    await reportCommitGauges(tasks, this.#o, this.#now());
    await this.#checkGaps(zeroFrom, now);
    return this.#nextLook(progress, boundary, now);
  };

  /**
   * After a batch a task committed: whether it moved the boundary past an hour end, so the stage should
   * look now rather than at its next tick. In memory (the last punctuation's view of every partition,
   * this partition's batch applied to it): no Redis call. Once per hour at most, so a wrong estimate
   * (another instance's partitions, a log end read before) costs one early look.
   */
  closableAfterBatch(
    partition: number,
    eventTimeMs: number | undefined,
    checkpoint: bigint | undefined,
    nowMs: number,
  ): boolean {
    if (!this.#progress || checkpoint === undefined) return false;
    this.#progress = this.#progress.map((p) => {
      if (p.partition !== partition) return p;
      const moved =
        eventTimeMs === undefined
          ? {}
          : { maxEventTime: Math.max(p.maxEventTime ?? eventTimeMs, eventTimeMs), activeAt: nowMs };
      return { ...p, ...moved, checkpoint, logEnd: p.logEnd > checkpoint + 1n ? p.logEnd : checkpoint + 1n };
    });
    const estimate = closeBoundary(this.#progress, nowMs, this.#o);
    const crossed = hourStart(estimate) > hourStart(this.#estimate);
    this.#estimate = estimate;
    if (!crossed || this.#wokenFor.has(hourStart(estimate))) return false;
    if (this.#wokenFor.size > 1_000) this.#wokenFor.clear();
    this.#wokenFor.add(hourStart(estimate));
    this.stats.batchWakes += 1;
    return true;
  }

  /** The ms until `nextCloseAt`, unless its hour end was predicted wrong too often. */
  #nextLook(progress: readonly PartitionProgress[], boundary: number, now: number): number | undefined {
    const hourEnd = hourStart(boundary) + HOUR_MS;
    if (this.#aim.hourEnd !== hourEnd) this.#aim = { hourEnd, missed: 0 };
    if (this.#aim.missed >= MISSED_LOOKS_PER_HOUR) return undefined;
    const at = nextCloseAt(progress, now, this.#o);
    if (at === undefined) return undefined;
    this.#lookAt = at;
    return at - this.#now();
  }

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

  /** Zero records of a customer are made on the partition its events go to, so they meet its usage. */
  #setZeroFields(partitions: number, subscribers: readonly Subscriber[]): void {
    const key = subscribers.map((s) => `${s.customer}@${s.sinceMs ?? ''}@${s.productCode ?? ''}`).join('\n');
    if (partitions === this.#partitions && key === this.#subscribersKey) return;
    this.#partitions = partitions;
    this.#subscribersKey = key;
    this.#subscribers = subscribers;
    this.#zeroFields = new Map();
    const dims = [...this.#o.plan.dimensions.values()].filter((d) => d.zeroRecords);
    if (!dims.length) return;
    for (const { customer, sinceMs, productCode } of subscribers) {
      const p = partitionOfCustomer(customer, partitions);
      const list = this.#zeroFields.get(p) ?? [];
      const fromMs = sinceMs === undefined ? undefined : hourStart(sinceMs);
      for (const d of dims) {
        if (productCode !== undefined && d.productCode !== productCode) continue;
        list.push({ field: aggregateField(customer, d.name), customer, productCode: d.productCode, fromMs });
      }
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
    held: bigint | undefined,
  ): Promise<void> {
    const task = store.task;
    const w = store.windows;
    for (const [hour, customer] of await w.pendingCuts(task)) {
      if (!(await this.#emitter.emitCut(store, hour, customer))) return;
    }
    for (const hour of await w.pendingEmits(task)) {
      this.stats.reEmitted += 1;
      // Not emitted (the submission topic cannot be written): this task's later hours would fail alike.
      // Other tasks still get their turn, so their hours at risk are dead-lettered in time.
      if ((await this.#emitter.emit(store, hour)) === undefined) return;
    }
    if (replaying) return;
    const allZero = (this.#zeroFields.get(task.partition) ?? []).map((z) => ({
      field: z.field,
      customer: z.customer,
      productCode: z.productCode,
      fromMs: z.fromMs ?? (zeroFrom as number),
    }));
    if (!(await this.#finalFlush.run(store, this.#ending, this.#partitions, allZero, held))) return;
    // A subscription that is ending gets no zero records after the hour it ended in.
    const zeroFields = allZero.map((z) => {
      const ending = this.#ending.get(z.customer) ?? this.#ending.get(cutScope(z.customer, z.productCode));
      return ending === undefined ? z : { ...z, untilMs: hourStart(ending.atMs) };
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
      if (!(await this.#finalizeHour(store, hour, zero, held))) return;
    }
  }

  /**
   * Freezes and emits one hour. With tracing on this is the `finalize` span: it links to a sample of the
   * hour's events (their producer spans), and its context is frozen with the records, so the worker's
   * spans and the AWS call continue this trace, even after a crash and a re-emission. Returns false when
   * the hour was frozen but could not be emitted (it waits for the next tick).
   */
  async #finalizeHour(
    store: HourlyWindowStore,
    hour: number,
    zero: string[],
    held: bigint | undefined,
  ): Promise<boolean> {
    const task = store.task;
    if (!tracingActive()) {
      await this.#finalizer.freeze(store.windows, task, store.token, hour, zero, undefined, held);
      await store.noteFrozen(hour);
      this.#o.faults?.afterFreeze?.();
      return (await this.#emitter.emit(store, hour)) !== undefined;
    }
    const links = boundedLinks(await store.windows.traces.read(task, hour), TRACE_LINKS_PER_HOUR);
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
          held,
        );
        await store.noteFrozen(hour);
        this.#o.faults?.afterFreeze?.();
        const emitted = await this.#emitter.emit(store, hour);
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
  async #checkGaps(zeroFrom: number | undefined, now: number): Promise<void> {
    if (!this.#zeroFields.size || now - this.#gapsCheckedAt < 60_000) return;
    this.#gapsCheckedAt = now;
    const due = hourStart(now - this.#o.maxDelayMs) - 2 * HOUR_MS;
    const since = new Map<string, number>();
    for (const { customer, sinceMs } of this.#subscribers) {
      since.set(customer, sinceMs === undefined ? (zeroFrom ?? now) : hourStart(sinceMs));
    }
    const expected = [...since].filter(([, from]) => from <= due).map(([customer]) => customer);
    const last = await this.#o.ledger.lastAcceptedOf(expected);
    const behind = last.filter((h) => h === undefined || h < due).length;
    metrics.customersBehind.set(behind);
  }

  #oldestAcceptableHour(): number {
    const now = this.#now();
    let h = hourStart(now) - DEFAULT_ACCEPTANCE_WINDOW_MS[this.#o.api];
    while (acceptanceDeadline(this.#o.api, h) - this.#o.submitMarginMs <= now) h += HOUR_MS;
    return h;
  }
}
