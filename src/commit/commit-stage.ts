/**
 * The commit stage: a wall-clock punctuator over this instance's partition tasks. An hour closes when
 * the event-time watermark passes its end + grace, or when the wall clock passes its end + maxDelay,
 * whichever comes first. Closing freezes the hour in Redis, emits its records, then marks it emitted;
 * hours frozen but not yet marked (a crash in between) are emitted again: same id, same quantity.
 *
 * The watermark is the lowest event time over the topic's active partitions, minus the allowed
 * out-of-orderness. A partition without valid events for `idleTimeout` stops holding it back; when
 * every partition is idle, the watermark follows the wall clock.
 */
import type { Producer } from 'kafkajs';
import type { Plan } from '../config/plan.ts';
import type { StreamTask } from '../engine/stream-task.ts';
import { isMeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { MeteringApi } from '../submit/aws-window.ts';
import { hourIso } from '../time/hours.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore } from '../window/hourly-window-store.ts';
import type { AggregationOp, PartitionTime } from '../window/window-store.ts';
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
  plan: Plan;
  ops: ReadonlyMap<string, AggregationOp>;
  api: MeteringApi;
  logger: Logger;
  now?: () => number;
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

export class CommitStage {
  /** `closeBoundary`: the latest hour end the last punctuation allowed to close. */
  readonly stats = { hoursFinalized: 0, recordsEmitted: 0, reEmitted: 0, closeBoundary: 0 };
  readonly #o: CommitStageOptions;
  readonly #now: () => number;

  constructor(options: CommitStageOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** One punctuation over every task this instance owns. */
  readonly punctuate = async (): Promise<void> => {
    const tasks = await this.#o.tasks();
    if (!tasks.length) return;
    const store0 = tasks[0]?.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
    if (!store0) return;
    const logEnds = await this.#o.logEnds();
    const times = await store0.windows.partitionTimes(this.#o.usageTopic, logEnds.size);
    const now = this.#now();
    const boundary = closeBoundary(
      times.map((t) => ({ ...t, logEnd: logEnds.get(t.partition) ?? 0n })),
      now,
      this.#o,
    );
    this.stats.closeBoundary = boundary;
    for (const task of tasks) {
      await task
        .exclusive(() => this.#closeDue(task.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS), boundary))
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
  };

  async #closeDue(store: HourlyWindowStore, boundary: number): Promise<void> {
    const task = store.task;
    for (const hour of await store.windows.pendingEmits(task)) {
      this.stats.reEmitted += 1;
      await this.#finalizeAndEmit(store, hour);
    }
    for (const hour of await store.windows.hoursEndingBy(task, boundary)) {
      await this.#finalizeAndEmit(store, hour);
    }
  }

  async #finalizeAndEmit(store: HourlyWindowStore, hourMs: number): Promise<void> {
    const task = store.task;
    const frozen = await store.windows.finalizeHour(task, store.token, hourMs, this.#o.ops);
    const finalizedAtMs = this.#now();
    const records: SubmissionRecord[] = frozen.map((f) =>
      makeSubmissionRecord({
        productCode: this.#o.plan.productCode,
        customer: f.customer,
        dimension: f.dimension,
        hourMs,
        quantity: f.quantity,
        api: this.#o.api,
        finalizedAtMs,
      }),
    );
    if (records.length) {
      await this.#o.producer.send({
        topic: this.#o.submissionsTopic,
        acks: -1,
        messages: records.map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      });
    }
    await store.windows.markEmitted(task, store.token, hourMs);
    this.stats.hoursFinalized += 1;
    this.stats.recordsEmitted += records.length;
    this.#o.logger.info(
      { partition: task.partition, hour: hourIso(hourMs), records: records.length },
      'hour finalized and emitted',
    );
  }
}
