/**
 * What the worker's AWS call forms (BatchMeterUsage, MeterUsage) share: the client and its quota, the
 * ledger, the stats, the records' consume spans, the backoff between attempts and the dead-lettering of
 * records AWS gave a final answer for (or whose deadline passed).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { ErrorCode, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { classifyAwsError } from '../metering/aws-errors.ts';
import type { MeteringApi } from '../metering/aws-window.ts';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from '../metering/backoff.ts';
import type { ErrorNote } from '../metering/dlq-envelope.ts';
import type { DlqPublisher } from '../metering/dlq-publisher.ts';
import type { SubmissionRecord } from '../metering/submission-record.ts';
import { submitFailures } from '../metering/submit-envelopes.ts';
import { metrics } from '../observability/metrics.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  traceparentOf,
  tracer,
  tracingActive,
} from '../observability/tracing.ts';
import type { Ledger } from '../state/ledger.ts';
import type { SharedRateLimiter } from '../state/rate-limiter.ts';
import { AwsCallSpan, type AwsCallTarget, awsCallTarget } from './aws-call-span.ts';

const HEARTBEAT_SLICE_MS = 2_000;

export interface WorkerStats {
  accepted: number;
  alreadyAccepted: number;
  calls: number;
  retries: number;
  deadLettered: Partial<Record<ErrorCode, number>>;
}

export interface CallOptions {
  client: MarketplaceMeteringClient;
  ledger: Ledger;
  dlq: DlqPublisher;
  /** Stop retrying this long before a record's AWS deadline. */
  deadlineMarginMs: number;
  logger: Logger;
  backoff?: BackoffOptions;
  /** The AWS quota shared by every worker pod; unlimited when absent (tests). */
  rateLimiter?: SharedRateLimiter;
  now: () => number;
}

export class CallContext {
  readonly stats: WorkerStats = { accepted: 0, alreadyAccepted: 0, calls: 0, retries: 0, deadLettered: {} };
  readonly o: CallOptions;
  /** The current batch's heartbeat: long backoffs keep the group membership alive with it. */
  heartbeat: () => Promise<void> = async () => {};
  /** Aborted on stop: a retry loop waiting out a backoff gives up its batch (redelivered to the next owner). */
  readonly stopping = new AbortController();
  /** With tracing on: each record's consume span, the parent of its AWS call and dead-letter spans. */
  readonly spans = new Map<string, Span>();
  readonly traced = tracingActive();
  /** The client's service name and region, for the AWS call spans (read once, with tracing on). */
  #target: Promise<AwsCallTarget> | undefined;

  constructor(options: CallOptions) {
    this.o = options;
  }

  now(): number {
    return this.o.now();
  }

  /** Waits for the shared quota (gives up on stop) and counts the call. */
  async acquire(): Promise<void> {
    await this.o.rateLimiter?.acquire(this.stopping.signal);
    this.stats.calls += 1;
  }

  /** Slows the fleet's shared rate down after a ThrottlingException. */
  async throttled(failure: MeterlineError): Promise<void> {
    if (failure.code === 'aws_throttled') await this.o.rateLimiter?.throttled();
  }

  /** The call's span, with tracing on and a consume span for at least one of its records. */
  async callSpan(
    api: MeteringApi,
    records: readonly SubmissionRecord[],
    attempt: number,
  ): Promise<AwsCallSpan | undefined> {
    if (!this.traced) return undefined;
    this.#target ??= awsCallTarget(this.o.client);
    return AwsCallSpan.start(api, await this.#target, records, attempt, (id) => this.spans.get(id));
  }

  outcome(recordId: string, outcome: string): void {
    this.spans.get(recordId)?.setAttribute(ATTR.outcome, outcome);
  }

  /**
   * Waits out a retriable failure with exponential backoff and full jitter. Records whose deadline (minus
   * the margin) would pass during the wait are dead-lettered as `deadline_exceeded`; returns the rest.
   */
  async backoff(
    records: SubmissionRecord[],
    attempt: number,
    failure: MeterlineError | undefined,
    firstError: ErrorNote | undefined,
  ): Promise<SubmissionRecord[]> {
    const wait = backoffDelay(attempt, this.o.backoff ?? DEFAULT_BACKOFF);
    const resumeAt = this.now() + wait;
    const expired = records.filter((r) => resumeAt > Date.parse(r.deadline) - this.o.deadlineMarginMs);
    if (expired.length) {
      await this.deadLetter(
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
    this.o.logger.warn(
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
      await delay(Math.min(left, HEARTBEAT_SLICE_MS), undefined, { signal: this.stopping.signal });
      await this.heartbeat();
    }
    return kept;
  }

  async deadLetter(
    records: SubmissionRecord[],
    reason: ErrorCode,
    detail: string,
    attempts?: number,
    firstError?: ErrorNote,
  ): Promise<void> {
    const failedAt = new Date(this.now()).toISOString();
    const spans = records.map((record) => {
      this.outcome(record.recordId, `dead_lettered:${reason}`);
      const parent = this.spans.get(record.recordId);
      if (!parent) return undefined;
      parent.setStatus({ code: SpanStatusCode.ERROR, message: `dead-lettered: ${reason}` });
      return tracer().startSpan(
        `send ${this.o.dlq.topic}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            [ATTR.messagingSystem]: 'kafka',
            [ATTR.messagingOperationType]: 'send',
            [ATTR.messagingDestination]: this.o.dlq.topic,
            [ATTR.recordId]: record.recordId,
            [ATTR.dlqReason]: reason,
          },
        },
        trace.setSpan(ROOT_CONTEXT, parent),
      );
    });
    const traceparents = spans.map((span, i) => traceparentOf(span) ?? records[i]?.traceparent);
    await this.o.dlq.publish(
      submitFailures(records, { reason, detail, attempts, firstError, failedAt }, traceparents),
    );
    for (const span of spans) span?.end();
    this.stats.deadLettered[reason] = (this.stats.deadLettered[reason] ?? 0) + records.length;
    metrics.deadLetters.inc({ stage: 'submit', reason }, records.length);
    // Inside the first record's span, so the log line carries its trace id.
    const span = this.spans.get(records[0]?.recordId ?? '');
    const log = () =>
      this.o.logger.warn({ reason, records: records.map((r) => r.recordId) }, 'records dead-lettered');
    if (span) context.with(trace.setSpan(ROOT_CONTEXT, span), log);
    else log();
  }
}

/** One AWS call, counted by outcome and timed. */
export async function timed<T>(api: MeteringApi, call: () => Promise<T>): Promise<T> {
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
