/**
 * The hourly-window processor: decodes and validates each usage record, assigns it to its UTC hour by
 * event time, and adds it to the partition's window store. Bad input and (with the dead-letter policy)
 * events for hours already finalized go to the `failed` sink with a reason code and the original bytes.
 */

import type { Processor, ProcessorContext, SourceRecord, StateStore } from '../engine/processor.ts';
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import type { Logger } from '../log.ts';
import type { MeteringApi } from '../metering/aws-window.ts';
import { dlqMessage, type FailedRecord, sourceOf } from '../metering/dlq-envelope.ts';
import type { DecodeResult, IngestReason, UsageDecoder, ValidationContext } from '../metering/usage-event.ts';
import { metrics, observeClockSkew } from '../observability/metrics.ts';
import { headerTraceparent, tracingActive } from '../observability/tracing.ts';
import { aggregateField } from '../redis/keys.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore } from '../state/hourly-window-store.ts';
import type { ProcessorStats } from '../state/processor-stats.ts';
import type { AggregationOp, LatePolicy } from '../state/window-types.ts';
import { hourIso, hourStart } from '../time/hours.ts';

export const FAILED_SINK = 'failed';
/** Back to the usage topic, keyed by customer: events that arrived on another customer's partition. */
export const REPARTITION_SINK = 'repartition';
/** Marks a forwarded event; it is counted where it lands and never forwarded again. */
export const FORWARDED_HEADER = 'meterline-forwarded-from';

export interface WindowProcessorOptions {
  decoder: UsageDecoder;
  ops: ReadonlyMap<string, AggregationOp>;
  latePolicy: LatePolicy;
  maxFutureSkewMs: number;
  submitMarginMs: number;
  maxMessageBytes: number;
  stats: ProcessorStats;
  logger: Logger;
  /** The API records go to (its acceptance window decides `too_old`). */
  api: MeteringApi;
  /** Partitions of the usage topic (0 while unknown): where each customer's events belong. */
  partitions: () => number;
}

export class WindowProcessor implements Processor<SourceRecord> {
  readonly #o: WindowProcessorOptions;
  readonly #dimensions: ReadonlySet<string>;
  #store: HourlyWindowStore | undefined;
  #ctx: ValidationContext | undefined;
  /** The batch (by its wall clock) whose dropped tags were last logged: one warning per batch. */
  #untaggedLoggedAt = -1;
  /** customer → partition, for the partition count it was computed with. */
  #home = new Map<string, number>();
  #homeFor = 0;
  /** customer → dimension → aggregate field (untagged). */
  #fields = new Map<string, Map<string, string>>();
  /** Whether to keep a sample of the events' trace contexts for the finalize span. */
  readonly #traced = tracingActive();

  constructor(options: WindowProcessorOptions) {
    this.#o = options;
    this.#dimensions = new Set(options.ops.keys());
  }

  init(context: { getStateStore<S extends StateStore>(name: string): S }): void {
    this.#store = context.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
  }

  process(record: SourceRecord, context: ProcessorContext): void | Promise<void> {
    this.#o.stats.events += 1;
    const decoded = this.#o.decoder.decode(record.value, this.#validation(context.nowMs));
    // JSON decodes synchronously: only Avro (and the dead-letter late policy) pays for a promise.
    if (decoded instanceof Promise) return decoded.then((result) => this.#apply(record, context, result));
    return this.#apply(record, context, decoded);
  }

  #apply(record: SourceRecord, context: ProcessorContext, result: DecodeResult): void | Promise<void> {
    if (!result.ok) {
      if (context.replaying) {
        // Already dead-lettered before the state loss.
        this.#o.stats.replaySkipped += 1;
        return;
      }
      this.#deadLetter(record, context, result.reason, result.detail);
      return;
    }
    const e = result.event;
    if (e.untagged) {
      this.#o.stats.untagged += 1;
      metrics.events.inc({ result: 'untagged' });
      if (this.#untaggedLoggedAt !== context.nowMs) {
        this.#untaggedLoggedAt = context.nowMs;
        this.#o.logger.warn(
          { partition: context.task.partition, offset: record.offset, id: e.id, why: e.untagged },
          'tags AWS would refuse: the usage is billed untagged',
        );
      }
    }
    if (this.#misrouted(e.customer, context)) return;
    const hour = hourStart(e.timestampMs);
    const arrivalMs = record.timestampMs ?? Number(record.timestamp);
    // Event time against the broker's clock: producers with drifting clocks show up here.
    observeClockSkew((e.timestampMs - arrivalMs) / 1000);
    const store = this.#store as HourlyWindowStore;
    const op = this.#o.ops.get(e.dimension) ?? 's';
    // Sums keep one aggregate per allocation tag set; a peak has no per-tag split.
    const field =
      op === 's' && e.tags
        ? aggregateField(e.customer, e.dimension, e.tags)
        : this.#field(e.customer, e.dimension);
    const traceparent = this.#traced ? headerTraceparent(record.headers) : undefined;
    if (
      this.#o.latePolicy === 'dead-letter' &&
      store.disposition(hour, record.offset, arrivalMs, field) === 'late'
    ) {
      // Dead-lettered when it first came; a replay only counts it as seen.
      if (context.replaying) this.#o.stats.replaySkipped += 1;
      else this.#deadLetter(record, context, 'late_event', `hour ${hourIso(hour)} is already finalized`);
      return;
    }
    store.add(hour, field, op, e, e.micros, e.timestampMs, record, arrivalMs, traceparent);
  }

  /**
   * A customer's usage, model state and zero records live on the partition its key hashes to. An event
   * produced elsewhere (no key, another key, another partitioner) is forwarded there, like Kafka Streams'
   * repartition step, instead of making a second record for the same hour. The sink is flushed before
   * the batch commits, and a resend after a crash is deduped by event id where it lands.
   */
  #misrouted(customer: string, context: ProcessorContext): boolean {
    const partitions = this.#o.partitions();
    if (partitions <= 0) return false;
    if (partitions !== this.#homeFor || this.#home.size > 100_000) {
      this.#home = new Map();
      this.#homeFor = partitions;
    }
    let home = this.#home.get(customer);
    if (home === undefined) {
      home = partitionOfCustomer(customer, partitions);
      this.#home.set(customer, home);
    }
    if (home === context.task.partition) return false;
    const headers = context.record.headers;
    if (headers?.[FORWARDED_HEADER] !== undefined) return false;
    const forwarded: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers ?? {})) {
      if (typeof value === 'string' || Buffer.isBuffer(value)) forwarded[name] = value.toString();
    }
    forwarded[FORWARDED_HEADER] = `${context.task.partition}/${context.record.offset}`;
    context.send(REPARTITION_SINK, { key: customer, value: context.record.value, headers: forwarded });
    this.#o.stats.forwarded += 1;
    metrics.events.inc({ result: 'forwarded' });
    return true;
  }

  /** The untagged aggregate field of a customer and dimension: one string each, not one per event. */
  #field(customer: string, dimension: string): string {
    let byDimension = this.#fields.get(customer);
    if (!byDimension) {
      // Bounded like #home: a long tail of customers only costs a rebuild.
      if (this.#fields.size > 100_000) this.#fields = new Map();
      byDimension = new Map();
      this.#fields.set(customer, byDimension);
    }
    let field = byDimension.get(dimension);
    if (field === undefined) {
      field = aggregateField(customer, dimension);
      byDimension.set(dimension, field);
    }
    return field;
  }

  /** One validation context per batch (keyed by its wall clock). */
  #validation(nowMs: number): ValidationContext {
    if (this.#ctx?.nowMs !== nowMs) {
      this.#ctx = {
        nowMs,
        maxFutureSkewMs: this.#o.maxFutureSkewMs,
        submitMarginMs: this.#o.submitMarginMs,
        dimensions: this.#dimensions,
        maxMessageBytes: this.#o.maxMessageBytes,
        api: this.#o.api,
      };
    }
    return this.#ctx;
  }

  #deadLetter(record: SourceRecord, context: ProcessorContext, reason: IngestReason, detail: string): void {
    const failed: FailedRecord = {
      version: 1,
      stage: 'ingest',
      reason,
      detail,
      retriable: false,
      failedAt: new Date(context.nowMs).toISOString(),
      ...sourceOf(context.task.topic, context.task.partition, record),
    };
    context.send(FAILED_SINK, dlqMessage(failed));
    this.#o.stats.failed[reason] = (this.#o.stats.failed[reason] ?? 0) + 1;
    metrics.deadLetters.inc({ stage: 'ingest', reason });
    metrics.events.inc({ result: 'dead_lettered' });
  }
}
