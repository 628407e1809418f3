/**
 * The hourly-window processor: decodes and validates each usage record, assigns it to its UTC hour by
 * event time, and adds it to the partition's window store. Bad input and (with the dead-letter policy)
 * events for hours already finalized go to the `failed` sink with a reason code and the original bytes.
 */

import { dlqMessage, type FailedRecord, sourceOf } from '../dlq/envelope.ts';
import type { Processor, ProcessorContext, SourceRecord, StateStore } from '../engine/processor.ts';
import type { EventDecoder } from '../ingest/decoder.ts';
import type { DecodeResult, IngestReason, ValidationContext } from '../ingest/event.ts';
import type { Logger } from '../log.ts';
import { aggregateField } from '../redis/keys.ts';
import { hourIso, hourStart } from '../time/hours.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore, type ProcessorStats } from './hourly-window-store.ts';
import type { AggregationOp, LatePolicy } from './window-store.ts';

export const FAILED_SINK = 'failed';

export interface WindowProcessorOptions {
  decoder: EventDecoder;
  ops: ReadonlyMap<string, AggregationOp>;
  latePolicy: LatePolicy;
  maxFutureSkewMs: number;
  submitMarginMs: number;
  maxMessageBytes: number;
  stats: ProcessorStats;
  logger: Logger;
}

export class WindowProcessor implements Processor<SourceRecord> {
  readonly #o: WindowProcessorOptions;
  readonly #dimensions: ReadonlySet<string>;
  #store: HourlyWindowStore | undefined;
  #ctx: ValidationContext | undefined;
  /** The batch (by its wall clock) whose dropped tags were last logged: one warning per batch. */
  #untaggedLoggedAt = -1;

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
      if (this.#untaggedLoggedAt !== context.nowMs) {
        this.#untaggedLoggedAt = context.nowMs;
        this.#o.logger.warn(
          { partition: context.task.partition, offset: record.offset, id: e.id, why: e.untagged },
          'tags AWS would refuse: the usage is billed untagged',
        );
      }
    }
    const hour = hourStart(e.timestampMs);
    const store = this.#store as HourlyWindowStore;
    const op = this.#o.ops.get(e.dimension) ?? 's';
    // Sums keep one aggregate per allocation tag set; a peak has no per-tag split.
    const field = aggregateField(e.customer, e.dimension, op === 's' ? e.tags : undefined);
    const add = () => store.add(hour, field, op, e.id, e.micros, e.timestampMs);
    if (this.#o.latePolicy !== 'dead-letter') return add();
    return store.isFinalized(hour).then((finalized) => {
      if (finalized)
        this.#deadLetter(record, context, 'late_event', `hour ${hourIso(hour)} is already finalized`);
      else add();
    });
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
  }
}
