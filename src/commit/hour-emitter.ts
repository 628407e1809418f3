/**
 * Puts frozen hours on the submission topic, the window changelog first: whatever may have been billed, a
 * Redis rebuilt after a loss knows exactly (window-changelog.ts). Then marks the hour emitted, so its
 * frozen records start to expire. Records of tenants without an AWS identity are held in the frozen hour
 * until they have one, and dead-lettered at their deadline margin; an hour whose emit keeps failing waits,
 * kept, and is dead-lettered (emit_failed) at its margin; an hour whose records are gone is dead-lettered
 * (frozen_hour_lost). Never dropped in silence. Used by the commit stage, on a task it holds.
 */
import type { Producer } from 'kafkajs';
import { type ErrorCode, isMeterlineError, type MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { acceptanceDeadline, type MeteringApi } from '../metering/aws-window.ts';
import type { FailedRecord } from '../metering/dlq-envelope.ts';
import { DlqPublisher } from '../metering/dlq-publisher.ts';
import { makeSubmissionRecord, type SubmissionRecord } from '../metering/submission-record.ts';
import { metrics } from '../observability/metrics.ts';
import { aggregateField } from '../redis/keys.ts';
import type { HourlyWindowStore } from '../state/hourly-window-store.ts';
import {
  type ChangelogMessage,
  cutEmittedMessages,
  cutMessages,
  emittedMessages,
  frozenHourMessages,
} from '../state/window-changelog.ts';
import { formatElapsed, HOUR_MS, hourIso } from '../time/hours.ts';
import type { HourFinalizer } from './hour-finalizer.ts';

export interface HourEmitterOptions {
  producer: Producer;
  usageTopic: string;
  submissionsTopic: string;
  changelogTopic: string;
  failedTopic: string;
  api: MeteringApi;
  submitMarginMs: number;
  logger: Logger;
  now: () => number;
  faults?: { afterEmit?: () => void };
}

/** What the emitter counts (the commit stage's stats). */
export interface EmitStats {
  hoursFinalized: number;
  recordsEmitted: number;
  hoursDeadLettered: number;
}

export class HourEmitter {
  /**
   * Whether a tenant has an AWS identity now for the product of a dimension (the commit stage sets it each
   * punctuation): a buyer registered for product A only is not mapped for B's dimensions.
   */
  isMapped: (customer: string, dimension: string) => boolean = () => true;
  readonly #o: HourEmitterOptions;
  readonly #finalizer: HourFinalizer;
  readonly #stats: EmitStats;
  readonly #dlq: DlqPublisher;
  /** `partition:hour` of frozen hours already in the changelog (written once per process and hour). */
  #changelogged = new Set<string>();

  constructor(options: HourEmitterOptions, finalizer: HourFinalizer, stats: EmitStats) {
    this.#o = options;
    this.#finalizer = finalizer;
    this.#stats = stats;
    this.#dlq = new DlqPublisher(options.producer, options.failedTopic);
  }

  #now(): number {
    return this.#o.now();
  }

  /** Emits one customer's early-closed hour: changelog first, then the submission topic. */
  async emitCut(store: HourlyWindowStore, hourMs: number, customer: string): Promise<boolean> {
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
    this.#stats.recordsEmitted += records.length;
    return true;
  }

  /**
   * Puts an hour's frozen records on the submission topic, then marks the hour emitted (only then do its
   * frozen records start to expire). Returns how many records were emitted, or undefined when the topic
   * did not take them: the hour waits for the next tick (or is dead-lettered once at risk, returning 0).
   */
  async emit(store: HourlyWindowStore, hourMs: number): Promise<number | undefined> {
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
    const done = await store.windows.held.sent(task, hourMs);
    const records: SubmissionRecord[] = [];
    const held: SubmissionRecord[] = [];
    for (const r of all) {
      if (done.has(aggregateField(r.customer, r.dimension))) continue;
      (this.isMapped(r.customer, r.dimension) ? records : held).push(r);
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
    this.#stats.recordsEmitted += records.length;
    if (held.length && !(await this.#heldDone(store, hourMs, held))) {
      // Part of the hour still waits for its tenants: what went out is noted, the hour stays pending.
      await store.windows.held.markSent(
        task,
        hourMs,
        records.map((r) => aggregateField(r.customer, r.dimension)),
      );
      return records.length;
    }
    await this.#changelogEmitted(store, hourMs);
    // Records held before and released now are held no more.
    await store.windows.held.release(
      task,
      hourMs,
      records.map((r) => aggregateField(r.customer, r.dimension)),
    );
    await store.windows.markEmitted(task, store.token, hourMs);
    if (done.size || held.length) await store.windows.held.forgetSent(task, hourMs);
    this.#changelogged.delete(memo);
    this.#stats.hoursFinalized += 1;
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
    const since = await store.windows.held.since(task, hourMs, fields, now);
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
    const envelopes = held.map((record) => {
      const from = since.get(aggregateField(record.customer, record.dimension)) ?? now;
      return frozenRecordFailure(
        record,
        'customer_mapping_missing',
        `no AWS identity for tenant "${record.customer}" (not in the customers file, not registered): held ${formatElapsed(now - from)} from ${new Date(from).toISOString()}, dead-lettered at the deadline margin; map the tenant and redrive before ${record.deadline}`,
        at,
        { heldSince: new Date(from).toISOString() },
      );
    });
    if (!(await this.#deadLetter(envelopes, { partition: task.partition, hour: hourIso(hourMs) })))
      return undefined;
    await store.windows.held.markSent(task, hourMs, fields);
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
    const done = await store.windows.held.sent(store.task, hourMs);
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
    const envelopes = records.map((record) =>
      frozenRecordFailure(
        record,
        'emit_failed',
        `the frozen records of ${this.#o.usageTopic}/${task.partition} hour ${hourIso(hourMs)} could not be put on ${this.#o.submissionsTopic} by ${new Date(riskAt).toISOString()} (the AWS deadline minus the submit margin): redrive before ${record.deadline}`,
        at,
        { lastError: { code: error.code, message: error.message, at } },
      ),
    );
    if (!(await this.#deadLetter(envelopes, where))) return undefined;
    await this.#changelogEmitted(store, hourMs);
    await store.windows.markEmitted(task, store.token, hourMs);
    this.#stats.hoursDeadLettered += 1;
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
    this.#stats.hoursDeadLettered += 1;
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

/**
 * The envelope of a frozen record the commit stage dead-letters (held past its margin, or not emitted):
 * redrivable until the record's own deadline, linked to its trace. `extra` says why it waited, and keeps
 * its place after `record` in the JSON.
 */
function frozenRecordFailure(
  record: SubmissionRecord,
  reason: ErrorCode,
  detail: string,
  failedAt: string,
  extra: Pick<FailedRecord, 'heldSince' | 'lastError'>,
): FailedRecord {
  return {
    version: 1,
    stage: 'commit',
    reason,
    detail,
    retriable: true,
    failedAt,
    record,
    ...extra,
    deadline: record.deadline,
    ...(record.traceparent ? { traceContext: { traceparent: record.traceparent } } : {}),
  };
}
