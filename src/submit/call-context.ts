/**
 * What the worker's AWS call forms (BatchMeterUsage, MeterUsage) share: the client and its quota, the
 * ledger, the stats, the records' consume spans, the backoff between attempts and the dead-lettering of
 * records AWS gave a final answer for (or whose deadline passed).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import { type ErrorCode, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { classifyAwsError } from '../metering/aws-errors.ts';
import type { MeteringApi } from '../metering/aws-window.ts';
import type { BackoffOptions } from '../metering/backoff.ts';
import type { ErrorNote } from '../metering/dlq-envelope.ts';
import type { DlqPublisher } from '../metering/dlq-publisher.ts';
import { retry } from '../metering/retry.ts';
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
   * Runs a call form's attempts with the shared retry(): exponential backoff with full jitter, no limit
   * on attempts. An attempt that throws `Resend` is tried again after the wait, with only the records
   * whose deadline (minus the margin) the wait does not pass: the others are dead-lettered as
   * `deadline_exceeded` first, and with none left no wait is made and the next attempt has nothing to
   * do. Anything else an attempt throws ends the loop as it is (a final answer is the attempt's to handle).
   */
  async withRetries(
    records: { get(): SubmissionRecord[]; keep(kept: readonly SubmissionRecord[]): void },
    attempt: (n: number) => Promise<void>,
  ): Promise<void> {
    let left = 0;
    await retry(attempt, {
      attempts: Number.POSITIVE_INFINITY,
      ...(this.o.backoff ? { backoff: this.o.backoff } : {}),
      classify: (error) => (error instanceof Resend ? error : undefined),
      onRetry: async ({ attempt: n, waitMs, error }) => {
        const { failure, first } = error as Resend;
        const resumeAt = this.now() + waitMs;
        const pending = records.get();
        const expired = pending.filter((r) => resumeAt > Date.parse(r.deadline) - this.o.deadlineMarginMs);
        if (expired.length) {
          await this.deadLetter(
            expired,
            'deadline_exceeded',
            `still failing at the deadline: ${failure?.message ?? 'unprocessed by AWS'}`,
            n,
            first,
          );
        }
        const kept = pending.filter((r) => !expired.includes(r));
        records.keep(kept);
        left = kept.length;
        if (!left) return;
        this.stats.retries += 1;
        this.o.logger.warn(
          {
            attempt: n,
            wait: waitMs,
            records: kept.length,
            code: failure?.code ?? 'aws_unprocessed',
            error: failure?.message,
          },
          'retrying',
        );
      },
      // In slices, with a heartbeat between them: a backoff longer than the session must not cost the
      // worker its partitions (and the batch a redelivery to another worker mid-retry).
      sleep: async (ms) => {
        if (!left) return;
        for (let wait = ms; wait > 0; wait -= HEARTBEAT_SLICE_MS) {
          await delay(Math.min(wait, HEARTBEAT_SLICE_MS), undefined, { signal: this.stopping.signal });
          await this.heartbeat();
        }
      },
    });
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

/**
 * Thrown by an attempt for another one after the backoff (withRetries retries nothing else): `failure` is
 * the retriable error, undefined when AWS returned records as unprocessed; `first` the records' first
 * failure, for their envelopes.
 */
export class Resend extends MeterlineError {
  readonly failure: MeterlineError | undefined;
  readonly first: ErrorNote;
  constructor(failure: MeterlineError | undefined, first: ErrorNote) {
    super(failure?.code ?? 'aws_unprocessed', failure?.message ?? 'AWS returned records as unprocessed', {
      retriable: true,
      ...(failure ? { cause: failure } : {}),
    });
    this.failure = failure;
    this.first = first;
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
