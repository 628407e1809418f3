/**
 * The metering worker: consumes frozen records and reports them with BatchMeterUsage (SaaS) or MeterUsage
 * (container products), within the fleet's shared rate limit. Each record is
 * stamped with its window's hour, skipped if the ledger shows it accepted, retried with backoff and full
 * jitter while its deadline allows, and dead-lettered with a reason when AWS gives a final answer.
 *
 * This module consumes and checks the ledger; the call forms are batch-meter-usage.ts and meter-usage.ts,
 * what they share (backoff, dead-lettering, spans) call-context.ts; the envelopes are built in the core,
 * metering/submit-envelopes.ts, beside the DLQ envelope (a stage may not import dlq/).
 */

import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { CustomerMap, CustomerMapping } from '../config/customers.ts';
import type { MeteringApi } from '../metering/aws-window.ts';
import type { FailedRecord } from '../metering/dlq-envelope.ts';
import { parseSubmissionRecord, type SubmissionRecord } from '../metering/submission-record.ts';
import { unreadableSubmission } from '../metering/submit-envelopes.ts';
import { metrics, reportOldestHour } from '../observability/metrics.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  contextFromTraceparent,
  failSpan,
  headerTraceparent,
  type Span,
  SpanKind,
  tracer,
} from '../observability/tracing.ts';
import { type DirectoryEntry, mappingOf, subscriptionField } from '../state/customer-directory.ts';
import { type Prepared, prepare, submitBatchCall } from './batch-meter-usage.ts';
import { chunkForBatchMeterUsage } from './batching.ts';
import { CallContext, type CallOptions, type WorkerStats } from './call-context.ts';
import { meterUsage } from './meter-usage.ts';

export type { WorkerStats } from './call-context.ts';

export interface WorkerOptions extends Omit<CallOptions, 'now'> {
  kafka: Kafka;
  /** The customers file: tenants in it are mapped from there, whatever the directory says. */
  customers: CustomerMap;
  /** Tenants that registered through the registration URL (looked up per batch for tenants not in the file). */
  directory?: {
    getSubscriptions(
      wanted: readonly { tenant: string; productCode: string }[],
    ): Promise<Map<string, DirectoryEntry>>;
  };
  topic: string;
  groupId: string;
  sessionTimeoutMs?: number;
  /** The API the deadline gauge reports against (records carry their own for billing). */
  api?: MeteringApi;
  /** BatchMeterUsage calls in flight at once (default 4). */
  concurrency?: number;
  now?: () => number;
}

export class MeteringWorker {
  readonly #o: WorkerOptions;
  readonly #now: () => number;
  readonly #ctx: CallContext;
  #consumer: Consumer | undefined;
  /** Records being billed (one entry per submit call) → the oldest hour among them. */
  readonly #inFlight = new Map<readonly SubmissionRecord[], number>();

  constructor(options: WorkerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#ctx = new CallContext({ ...options, now: this.#now });
  }

  get stats(): WorkerStats {
    return this.#ctx.stats;
  }

  async start(): Promise<void> {
    const sessionTimeout = this.#o.sessionTimeoutMs ?? 30_000;
    const consumer = this.#o.kafka.consumer({
      groupId: this.#o.groupId,
      sessionTimeout,
      rebalanceTimeout: 2 * sessionTimeout,
      heartbeatInterval: Math.min(3_000, Math.floor(sessionTimeout / 3)),
    });
    this.#consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: this.#o.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      // Partitions are independent: while one batch waits for AWS, another one's calls can go out.
      partitionsConsumedConcurrently: 3,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
  }

  async stop(): Promise<void> {
    this.#ctx.stopping.abort();
    await this.#consumer?.disconnect();
  }

  async #eachBatch({
    batch,
    resolveOffset,
    commitOffsetsIfNecessary,
    heartbeat,
    isRunning,
  }: EachBatchPayload) {
    if (!batch.messages.length || !isRunning()) return;
    const records: SubmissionRecord[] = [];
    const unreadable: FailedRecord[] = [];
    for (const m of batch.messages) {
      const r = parseSubmissionRecord(m.value);
      if (r) {
        r.traceparent ??= headerTraceparent(m.headers);
        records.push(r);
      } else {
        unreadable.push(unreadableSubmission(batch.topic, batch.partition, m, this.#now()));
      }
    }
    await this.#o.dlq.publish(unreadable);
    try {
      await this.submit(records, heartbeat);
    } catch (error) {
      if (this.#ctx.stopping.signal.aborted) return; // unresolved: the records are redelivered, never lost
      throw error;
    }
    resolveOffset((batch.messages[batch.messages.length - 1] as { offset: string }).offset);
    await commitOffsetsIfNecessary();
  }

  /** Reports records to AWS. Resolves once each one is accepted or dead-lettered. */
  async submit(
    records: readonly SubmissionRecord[],
    heartbeat: () => Promise<void> = async () => {},
  ): Promise<void> {
    this.#ctx.heartbeat = heartbeat;
    const unique = [...new Map(records.map((r) => [r.recordId, r])).values()];
    if (!unique.length) return;
    const oldest = unique.reduce((min, r) => Math.min(min, Date.parse(r.hour)), Number.POSITIVE_INFINITY);
    this.#inFlight.set(unique, oldest);
    this.#reportOldest();
    metrics.pendingRecords.inc(unique.length);
    // This call's spans; the shared map lets the call paths below find a record's span by its id.
    const spans = new Map<string, Span>();
    if (this.#ctx.traced) {
      for (const r of unique) {
        const span = this.#consumeSpan(r);
        spans.set(r.recordId, span);
        this.#ctx.spans.set(r.recordId, span);
      }
    }
    try {
      await this.#submitAll(unique, heartbeat);
    } catch (error) {
      for (const span of spans.values()) failSpan(span, error);
      throw error;
    } finally {
      for (const [id, span] of spans) {
        span.end();
        if (this.#ctx.spans.get(id) === span) this.#ctx.spans.delete(id);
      }
      this.#inFlight.delete(unique);
      this.#reportOldest();
      metrics.pendingRecords.dec(unique.length);
    }
  }

  /** The record's consume span: a child of the finalize span that froze it (its traceparent). */
  #consumeSpan(r: SubmissionRecord): Span {
    return tracer().startSpan(
      `process ${this.#o.topic}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          [ATTR.messagingSystem]: 'kafka',
          [ATTR.messagingOperationType]: 'process',
          [ATTR.messagingOperationName]: 'process',
          [ATTR.messagingDestination]: this.#o.topic,
          [ATTR.messagingConsumerGroup]: this.#o.groupId,
          [ATTR.recordId]: r.recordId,
          [ATTR.customer]: r.customer,
          [ATTR.dimension]: r.dimension,
          [ATTR.windowStart]: r.hour,
          [ATTR.quantity]: r.quantity,
        },
      },
      contextFromTraceparent(r.traceparent),
    );
  }

  /** The worker's side of the deadline gauge: the oldest hour among records it is still trying to bill. */
  #reportOldest(): void {
    const hours = [...this.#inFlight.values()];
    reportOldestHour(
      'worker',
      hours.length ? Math.min(...hours) : undefined,
      this.#o.api ?? 'BatchMeterUsage',
      this.#now(),
    );
  }

  /**
   * Directory mappings of the batch's SaaS tenants the customers file does not name, per product
   * subscription (`subscriptionField(tenant, productCode)`): each product is billed with its own license.
   */
  async #registeredMappings(records: readonly SubmissionRecord[]): Promise<Map<string, CustomerMapping>> {
    const out = new Map<string, CustomerMapping>();
    const directory = this.#o.directory;
    if (!directory) return out;
    const wanted = records
      .filter((r) => r.api !== 'MeterUsage' && !this.#o.customers.has(r.customer))
      .map((r) => ({ tenant: r.customer, productCode: r.productCode }));
    if (!wanted.length) return out;
    for (const [field, entry] of await directory.getSubscriptions(wanted)) {
      // A failed subscription has no agreement: AWS would refuse it. Any other status is billed, since
      // the hours before an unsubscription are owed, and AWS itself refuses what comes after.
      const mapping = entry.status === 'subscribe-failed' ? undefined : mappingOf(entry);
      if (mapping) out.set(field, mapping);
    }
    return out;
  }

  async #submitAll(unique: SubmissionRecord[], heartbeat: () => Promise<void>): Promise<void> {
    const done = await this.#o.ledger.accepted(unique.map((r) => r.recordId));
    const registered = await this.#registeredMappings(unique);
    const prepared: Prepared[] = [];
    const now = this.#now();
    for (const record of unique) {
      const accepted = done.get(record.recordId);
      if (accepted && accepted.quantity !== record.quantity) {
        // AWS bills the first quantity; a second one would be refused as DuplicateRecord. Never skip it
        // silently: the usage it carries is not billed.
        await this.#ctx.deadLetter(
          [record],
          'duplicate_record',
          `AWS already accepted ${accepted.quantity} for this customer, dimension and hour (${accepted.meteringRecordId}); this record says ${record.quantity}`,
        );
        continue;
      }
      if (accepted) {
        this.stats.alreadyAccepted += 1;
        this.#ctx.outcome(record.recordId, 'already_accepted');
        continue;
      }
      if (now > Date.parse(record.deadline) - this.#o.deadlineMarginMs) {
        await this.#ctx.deadLetter([record], 'deadline_exceeded', `deadline ${record.deadline} has passed`);
        continue;
      }
      if (record.api === 'MeterUsage') {
        // Container products: the caller's own account is billed; no customer mapping is involved.
        await meterUsage(this.#ctx, record);
        await heartbeat();
        continue;
      }
      const mapping =
        this.#o.customers.get(record.customer) ??
        registered.get(subscriptionField(record.customer, record.productCode));
      if (!mapping) {
        await this.#ctx.deadLetter(
          [record],
          'customer_mapping_missing',
          `no AWS identity for tenant "${record.customer}": not in the customers file, and not registered through the registration URL`,
        );
        continue;
      }
      prepared.push(prepare(record, mapping));
    }
    const calls = chunkForBatchMeterUsage(
      prepared,
      (p) => `${p.record.productCode}|${'customerAwsAccountId' in p.mapping ? 'account' : 'identifier'}`,
      (p) => JSON.stringify(p.usage).length,
    );
    // Several calls in flight: AWS answers in tens to hundreds of milliseconds, and one call at a time
    // could never use a 10-per-second quota. The shared rate limiter still paces every call.
    const queue = [...calls];
    const lanes = Array.from({ length: Math.min(this.#o.concurrency ?? 4, queue.length) }, async () => {
      for (let call = queue.shift(); call; call = queue.shift()) {
        await submitBatchCall(this.#ctx, call);
        await heartbeat();
      }
    });
    const failed = (await Promise.allSettled(lanes)).find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
