/**
 * The metering worker: consumes frozen records and reports them with BatchMeterUsage (SaaS) or MeterUsage
 * (container products), within the fleet's shared rate limit. Each record is
 * stamped with its window's hour, skipped if the ledger shows it accepted, retried with backoff and full
 * jitter while its deadline allows, and dead-lettered with a reason when AWS gives a final answer.
 */

import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import {
  BatchMeterUsageCommand,
  type BatchMeterUsageCommandOutput,
  type MarketplaceMeteringClient,
  MeterUsageCommand,
  type UsageAllocation,
  type UsageRecord,
  type UsageRecordResult,
} from '@aws-sdk/client-marketplace-metering';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { CustomerMap, CustomerMapping } from '../config/customers.ts';
import type { ErrorCode, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Allocation } from '../metering/allocations.ts';
import { classifyAwsError, mayBeCausedByRecords } from '../metering/aws-errors.ts';
import { isWithinAcceptanceWindow, type MeteringApi } from '../metering/aws-window.ts';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from '../metering/backoff.ts';
import { type ErrorNote, type FailedRecord, sourceOf } from '../metering/dlq-envelope.ts';
import type { DlqPublisher } from '../metering/dlq-publisher.ts';
import { parseSubmissionRecord, type SubmissionRecord } from '../metering/submission-record.ts';
import { metrics, reportOldestHour } from '../observability/metrics.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  context,
  contextFromTraceparent,
  failSpan,
  headerTraceparent,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  traceparentOf,
  tracer,
  tracingActive,
} from '../observability/tracing.ts';
import { type DirectoryEntry, mappingOf, subscriptionField } from '../state/customer-directory.ts';
import type { Ledger } from '../state/ledger.ts';
import type { SharedRateLimiter } from '../state/rate-limiter.ts';
import { AwsCallSpan, type AwsCallTarget, awsCallTarget } from './aws-call-span.ts';
import { chunkForBatchMeterUsage } from './batching.ts';

const HEARTBEAT_SLICE_MS = 2_000;

/** Reasons a redrive can cure once the operator fixes the cause: the subscription, or the tenant's AWS identity. */
const REDRIVABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'customer_not_subscribed',
  'customer_mapping_missing',
  'invalid_license',
  'invalid_customer_identifier',
]);

export interface WorkerOptions {
  kafka: Kafka;
  client: MarketplaceMeteringClient;
  ledger: Ledger;
  dlq: DlqPublisher;
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
  /** Stop retrying this long before a record's AWS deadline. */
  deadlineMarginMs: number;
  sessionTimeoutMs?: number;
  logger: Logger;
  backoff?: BackoffOptions;
  /** The API the deadline gauge reports against (records carry their own for billing). */
  api?: MeteringApi;
  /** BatchMeterUsage calls in flight at once (default 4). */
  concurrency?: number;
  /** The AWS quota shared by every worker pod; unlimited when absent (tests). */
  rateLimiter?: SharedRateLimiter;
  now?: () => number;
}

interface Prepared {
  record: SubmissionRecord;
  mapping: CustomerMapping;
  usage: UsageRecord;
  matchKey: string;
}

export interface WorkerStats {
  accepted: number;
  alreadyAccepted: number;
  calls: number;
  retries: number;
  deadLettered: Partial<Record<ErrorCode, number>>;
}

export class MeteringWorker {
  readonly stats: WorkerStats = { accepted: 0, alreadyAccepted: 0, calls: 0, retries: 0, deadLettered: {} };
  readonly #o: WorkerOptions;
  readonly #now: () => number;
  #consumer: Consumer | undefined;
  /** Records being billed (one entry per submit call) → the oldest hour among them. */
  readonly #inFlight = new Map<readonly SubmissionRecord[], number>();
  /** The current batch's heartbeat: long backoffs keep the group membership alive with it. */
  #heartbeat: () => Promise<void> = async () => {};
  /** Aborted on stop: a retry loop waiting out a backoff gives up its batch (redelivered to the next owner). */
  #stopping = new AbortController();
  /** With tracing on: each record's consume span, the parent of its AWS call and dead-letter spans. */
  readonly #spans = new Map<string, Span>();
  readonly #traced = tracingActive();
  /** The client's service name and region, for the AWS call spans (read once, with tracing on). */
  #target: Promise<AwsCallTarget> | undefined;

  constructor(options: WorkerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
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
    this.#stopping.abort();
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
        unreadable.push({
          version: 1,
          stage: 'submit',
          reason: 'invalid_request',
          detail: 'submission message is not a v1 submission record',
          retriable: false,
          failedAt: new Date(this.#now()).toISOString(),
          ...sourceOf(batch.topic, batch.partition, m),
        });
      }
    }
    await this.#o.dlq.publish(unreadable);
    try {
      await this.submit(records, heartbeat);
    } catch (error) {
      if (this.#stopping.signal.aborted) return; // unresolved: the records are redelivered, never lost
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
    this.#heartbeat = heartbeat;
    const unique = [...new Map(records.map((r) => [r.recordId, r])).values()];
    if (!unique.length) return;
    const oldest = unique.reduce((min, r) => Math.min(min, Date.parse(r.hour)), Number.POSITIVE_INFINITY);
    this.#inFlight.set(unique, oldest);
    this.#reportOldest();
    metrics.pendingRecords.inc(unique.length);
    // This call's spans; the shared map lets the call paths below find a record's span by its id.
    const spans = new Map<string, Span>();
    if (this.#traced) {
      for (const r of unique) {
        const span = this.#consumeSpan(r);
        spans.set(r.recordId, span);
        this.#spans.set(r.recordId, span);
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
        if (this.#spans.get(id) === span) this.#spans.delete(id);
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

  /** A child span of the record's consume span (undefined when tracing is off). */
  #childSpan(
    recordId: string,
    name: string,
    kind: SpanKind,
    attributes: Record<string, string | number>,
  ): Span | undefined {
    const parent = this.#spans.get(recordId);
    if (!parent) return undefined;
    return tracer().startSpan(name, { kind, attributes }, trace.setSpan(ROOT_CONTEXT, parent));
  }

  #outcome(recordId: string, outcome: string): void {
    this.#spans.get(recordId)?.setAttribute(ATTR.outcome, outcome);
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
        await this.#deadLetter(
          [record],
          'duplicate_record',
          `AWS already accepted ${accepted.quantity} for this customer, dimension and hour (${accepted.meteringRecordId}); this record says ${record.quantity}`,
        );
        continue;
      }
      if (accepted) {
        this.stats.alreadyAccepted += 1;
        this.#outcome(record.recordId, 'already_accepted');
        continue;
      }
      if (now > Date.parse(record.deadline) - this.#o.deadlineMarginMs) {
        await this.#deadLetter([record], 'deadline_exceeded', `deadline ${record.deadline} has passed`);
        continue;
      }
      if (record.api === 'MeterUsage') {
        // Container products: the caller's own account is billed; no customer mapping is involved.
        await this.#meterUsage(record);
        await heartbeat();
        continue;
      }
      const mapping =
        this.#o.customers.get(record.customer) ??
        registered.get(subscriptionField(record.customer, record.productCode));
      if (!mapping) {
        await this.#deadLetter(
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
        await this.#submitCall(call);
        await heartbeat();
      }
    });
    const failed = (await Promise.allSettled(lanes)).find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** One BatchMeterUsage call and its retries. `earlier`: the records' first failure, when a caller saw one. */
  async #submitCall(call: Prepared[], earlier?: ErrorNote): Promise<void> {
    let pending = call;
    let attempt = 0;
    let first = earlier;
    while (pending.length) {
      const productCode = pending[0]?.record.productCode;
      let failure: MeterlineError | undefined;
      try {
        await this.#o.rateLimiter?.acquire(this.#stopping.signal);
        this.stats.calls += 1;
        const records = pending.map((p) => p.record);
        const span = await this.#callSpan('BatchMeterUsage', records, attempt);
        let out: BatchMeterUsageCommandOutput;
        try {
          out = await timed('BatchMeterUsage', () =>
            this.#o.client.send(
              new BatchMeterUsageCommand({
                ProductCode: productCode,
                UsageRecords: pending.map((p) => p.usage),
              }),
            ),
          );
        } catch (error) {
          span?.failed(records, classifyAwsError(error).code, error);
          throw error;
        }
        try {
          pending = await this.#handleResults(pending, out.Results ?? [], out.UnprocessedRecords ?? [], span);
        } finally {
          span?.answered(out);
        }
        if (!pending.length) return;
        failure = undefined;
      } catch (error) {
        if (this.#stopping.signal.aborted) throw error;
        failure = classifyAwsError(error);
        if (failure.code === 'aws_throttled') await this.#o.rateLimiter?.throttled();
      }

      if (failure && !failure.retriable) {
        if (failure.code === 'timestamp_out_of_bounds') {
          // Our clock names most culprits: dead-letter the records outside the window, resend the rest.
          const now = this.#now();
          const out = pending.filter(
            (p) => !isWithinAcceptanceWindow(p.record.api, Date.parse(p.record.hour), now),
          );
          if (out.length) {
            await this.#deadLetter(
              out.map((p) => p.record),
              'timestamp_out_of_bounds',
              failure.message,
            );
            pending = pending.filter((p) => !out.includes(p));
            continue;
          }
        }
        // AWS rejects the whole call for one record's fault: find the records that caused it.
        if (pending.length > 1 && mayBeCausedByRecords(failure)) {
          await this.#narrow(pending, failure, first);
          return;
        }
        await this.#deadLetter(
          pending.map((p) => p.record),
          failure.code,
          failure.message,
          attempt + 1,
          first,
        );
        return;
      }

      // Retriable: a thrown transient error, or UnprocessedRecords.
      first ??= noteOf(failure, this.#now());
      const kept = await this.#backoff(
        pending.map((p) => p.record),
        attempt++,
        failure,
        first,
      );
      pending = pending.filter((p) => kept.includes(p.record));
    }
  }

  /**
   * Narrows a whole-call rejection down to the records that caused it. A rejected call records nothing,
   * so its records can be resent in parts. Bisection rather than one call per record: k bad records
   * among n cost about 2k·log2(n/k) calls (about 10 for 1 in 25) instead of n, and every call spends the
   * fleet's shared 10 TPS quota. Each part goes through #submitCall, so it takes its token from the shared
   * rate limiter and keeps its own retries and deadline; a part of one record gets AWS's final answer.
   */
  async #narrow(pending: Prepared[], failure: MeterlineError, first: ErrorNote | undefined): Promise<void> {
    const note = first ?? noteOf(failure, this.#now());
    const half = Math.ceil(pending.length / 2);
    for (const part of [pending.slice(0, half), pending.slice(half)]) {
      await this.#submitCall(part, note);
      await this.#heartbeat();
    }
  }

  /** The call's span, with tracing on and a consume span for at least one of its records. */
  async #callSpan(
    api: MeteringApi,
    records: readonly SubmissionRecord[],
    attempt: number,
  ): Promise<AwsCallSpan | undefined> {
    if (!this.#traced) return undefined;
    this.#target ??= awsCallTarget(this.#o.client);
    return AwsCallSpan.start(api, await this.#target, records, attempt, (id) => this.#spans.get(id));
  }

  /**
   * Waits out a retriable failure with exponential backoff and full jitter. Records whose deadline (minus
   * the margin) would pass during the wait are dead-lettered as `deadline_exceeded`; returns the rest.
   */
  async #backoff(
    records: SubmissionRecord[],
    attempt: number,
    failure: MeterlineError | undefined,
    firstError: ErrorNote | undefined,
  ): Promise<SubmissionRecord[]> {
    const wait = backoffDelay(attempt, this.#o.backoff ?? DEFAULT_BACKOFF);
    const resumeAt = this.#now() + wait;
    const expired = records.filter((r) => resumeAt > Date.parse(r.deadline) - this.#o.deadlineMarginMs);
    if (expired.length) {
      await this.#deadLetter(
        expired,
        'deadline_exceeded',
        `still failing at the deadline: ${failure?.message ?? 'unprocessed by AWS'}`,
        attempt + 1,
        firstError,
      );
    }
    const kept = records.filter((r) => !expired.includes(r));
    if (!kept.length) return kept;
    this.stats.retries += 1;
    this.#o.logger.warn(
      {
        attempt: attempt + 1,
        wait,
        records: kept.length,
        code: failure?.code ?? 'aws_unprocessed',
        error: failure?.message,
      },
      'retrying',
    );
    // In slices, with a heartbeat between them: a backoff longer than the session must not cost the
    // worker its partitions (and the batch a redelivery to another worker mid-retry).
    for (let left = wait; left > 0; left -= HEARTBEAT_SLICE_MS) {
      await delay(Math.min(left, HEARTBEAT_SLICE_MS), undefined, { signal: this.#stopping.signal });
      await this.#heartbeat();
    }
    return kept;
  }

  /**
   * Container products: one MeterUsage call per record, with a ClientToken derived from the record id, so
   * a resend after a crash is idempotent and a changed quantity is refused (DuplicateRequestException).
   */
  async #meterUsage(record: SubmissionRecord): Promise<void> {
    let first: ErrorNote | undefined;
    for (let attempt = 0; ; attempt++) {
      let failure: MeterlineError;
      let span: AwsCallSpan | undefined;
      try {
        await this.#o.rateLimiter?.acquire(this.#stopping.signal);
        this.stats.calls += 1;
        span = await this.#callSpan('MeterUsage', [record], attempt);
        const out = await timed('MeterUsage', () =>
          this.#o.client.send(
            new MeterUsageCommand({
              ProductCode: record.productCode,
              Timestamp: new Date(record.hour),
              UsageDimension: record.dimension,
              UsageQuantity: record.quantity,
              ClientToken: clientToken(record.recordId),
              ...(record.allocations?.length
                ? { UsageAllocations: usageAllocations(record.allocations) }
                : {}),
            }),
          ),
        );
        await this.#o.ledger.record([
          {
            recordId: record.recordId,
            entry: {
              meteringRecordId: out.MeteringRecordId ?? '',
              quantity: record.quantity,
              acceptedAt: new Date(this.#now()).toISOString(),
            },
            customer: record.customer,
            hourMs: Date.parse(record.hour),
          },
        ]);
        this.stats.accepted += 1;
        metrics.recordsAccepted.inc({ api: 'MeterUsage' });
        span?.record(record, 'Success', out.MeteringRecordId ?? '');
        span?.answered(out);
        span = undefined;
        this.#outcome(record.recordId, 'accepted');
        return;
      } catch (error) {
        failure = classifyAwsError(error);
        span?.failed([record], failure.code, error);
        if (this.#stopping.signal.aborted) throw error;
        if (failure.code === 'aws_throttled') await this.#o.rateLimiter?.throttled();
      }
      if (!failure.retriable) {
        await this.#deadLetter([record], failure.code, failure.message, attempt + 1, first);
        return;
      }
      first ??= noteOf(failure, this.#now());
      if (!(await this.#backoff([record], attempt, failure, first)).length) return;
    }
  }

  /** Records results; returns the records AWS left unprocessed. */
  async #handleResults(
    sent: Prepared[],
    results: UsageRecordResult[],
    unprocessed: UsageRecord[],
    span?: AwsCallSpan,
  ): Promise<Prepared[]> {
    const byKey = new Map(sent.map((p) => [p.matchKey, p]));
    const accepted: {
      recordId: string;
      entry: { meteringRecordId: string; quantity: number; acceptedAt: string };
      customer: string;
      hourMs: number;
    }[] = [];
    const acceptedAt = new Date(this.#now()).toISOString();
    const answered = new Set<Prepared>();
    for (const r of results) {
      const p = r.UsageRecord && byKey.get(matchKeyOf(r.UsageRecord));
      if (!p) {
        this.#o.logger.error({ result: r }, 'AWS returned a result for a record that was not sent');
        continue;
      }
      answered.add(p);
      span?.record(p.record, r.Status ?? 'unknown', r.MeteringRecordId);
      if (r.Status === 'Success') {
        this.#outcome(p.record.recordId, 'accepted');
        accepted.push({
          recordId: p.record.recordId,
          entry: { meteringRecordId: r.MeteringRecordId ?? '', quantity: p.record.quantity, acceptedAt },
          customer: p.record.customer,
          hourMs: Date.parse(p.record.hour),
        });
      } else if (r.Status === 'DuplicateRecord') {
        this.#o.logger.error({ recordId: p.record.recordId }, 'AWS holds a conflicting record for this hour');
        await this.#deadLetter(
          [p.record],
          'duplicate_record',
          'AWS already has a record with a different quantity',
        );
      } else {
        await this.#deadLetter([p.record], 'customer_not_subscribed', `AWS status ${r.Status}`);
      }
    }
    await this.#o.ledger.record(accepted);
    this.stats.accepted += accepted.length;
    metrics.recordsAccepted.inc({ api: 'BatchMeterUsage' }, accepted.length);
    const retry = unprocessed.flatMap((u) => byKey.get(matchKeyOf(u)) ?? []);
    // A record AWS neither answered nor listed as unprocessed is retried too: never assume success.
    for (const p of sent) if (!answered.has(p) && !retry.includes(p)) retry.push(p);
    for (const p of retry) span?.record(p.record, 'Unprocessed');
    return retry;
  }

  async #deadLetter(
    records: SubmissionRecord[],
    reason: ErrorCode,
    detail: string,
    attempts?: number,
    firstError?: ErrorNote,
  ): Promise<void> {
    const failedAt = new Date(this.#now()).toISOString();
    const lastError: ErrorNote = { code: reason, message: detail, at: failedAt };
    const spans = records.map((record) => {
      this.#outcome(record.recordId, `dead_lettered:${reason}`);
      const span = this.#childSpan(record.recordId, `send ${this.#o.dlq.topic}`, SpanKind.PRODUCER, {
        [ATTR.messagingSystem]: 'kafka',
        [ATTR.messagingOperationType]: 'send',
        [ATTR.messagingDestination]: this.#o.dlq.topic,
        [ATTR.recordId]: record.recordId,
        [ATTR.dlqReason]: reason,
      });
      const parent = this.#spans.get(record.recordId);
      parent?.setStatus({ code: SpanStatusCode.ERROR, message: `dead-lettered: ${reason}` });
      return span;
    });
    const traceparents = spans.map((span, i) => traceparentOf(span) ?? records[i]?.traceparent);
    await this.#o.dlq.publish(
      records.map((record, i) => ({
        version: 1,
        stage: 'submit',
        reason,
        detail,
        retriable: REDRIVABLE.has(reason),
        failedAt,
        record,
        deadline: record.deadline,
        firstError: firstError ?? lastError,
        lastError,
        ...(attempts === undefined ? {} : { attempts }),
        ...(traceparents[i] ? { traceContext: { traceparent: traceparents[i] as string } } : {}),
      })),
    );
    for (const span of spans) span?.end();
    this.stats.deadLettered[reason] = (this.stats.deadLettered[reason] ?? 0) + records.length;
    metrics.deadLetters.inc({ stage: 'submit', reason }, records.length);
    // Inside the first record's span, so the log line carries its trace id.
    const span = this.#spans.get(records[0]?.recordId ?? '');
    const log = () =>
      this.#o.logger.warn({ reason, records: records.map((r) => r.recordId) }, 'records dead-lettered');
    if (span) context.with(trace.setSpan(ROOT_CONTEXT, span), log);
    else log();
  }
}

function prepare(record: SubmissionRecord, mapping: CustomerMapping): Prepared {
  const usage: UsageRecord = {
    Timestamp: new Date(record.hour),
    Dimension: record.dimension,
    Quantity: record.quantity,
  };
  if (record.allocations?.length) usage.UsageAllocations = usageAllocations(record.allocations);
  if ('customerAwsAccountId' in mapping) {
    usage.CustomerAWSAccountId = mapping.customerAwsAccountId;
    usage.LicenseArn = mapping.licenseArn;
  } else {
    usage.CustomerIdentifier = mapping.customerIdentifier;
  }
  return { record, mapping, usage, matchKey: matchKeyOf(usage) };
}

/** One AWS call, counted by outcome and timed. */
async function timed<T>(api: MeteringApi, call: () => Promise<T>): Promise<T> {
  const end = metrics.awsCallDurationSeconds.startTimer({ api });
  try {
    const out = await call();
    metrics.awsCalls.inc({ api, outcome: 'ok' });
    return out;
  } catch (error) {
    metrics.awsCalls.inc({ api, outcome: classifyAwsError(error).code });
    throw error;
  } finally {
    end();
  }
}

function noteOf(failure: MeterlineError | undefined, nowMs: number): ErrorNote {
  return {
    code: failure?.code ?? 'aws_unprocessed',
    message: failure?.message ?? 'AWS returned the record as unprocessed',
    at: new Date(nowMs).toISOString(),
  };
}

function usageAllocations(allocations: readonly Allocation[]): UsageAllocation[] {
  return allocations.map((a) => ({
    AllocatedUsageQuantity: a.quantity,
    ...(a.tags ? { Tags: Object.entries(a.tags).map(([Key, Value]) => ({ Key, Value })) } : {}),
  }));
}

/** MeterUsage's idempotency token (at most 64 characters): the same record always sends the same one. */
export function clientToken(recordId: string): string {
  return createHash('sha256').update(recordId).digest('hex');
}

function matchKeyOf(u: UsageRecord): string {
  const customer = u.CustomerAWSAccountId ?? u.CustomerIdentifier ?? '';
  return `${customer}|${u.Dimension}|${u.Timestamp ? Math.floor(u.Timestamp.getTime() / 1000) : ''}`;
}
