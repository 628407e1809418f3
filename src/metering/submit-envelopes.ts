/**
 * The metering worker's failed-records envelopes (stage `submit`): a message that is not a submission
 * record, and a record AWS did not take, with its reason, attempts, first and last failure and trace.
 */

import type { ErrorCode, MeterlineError } from '../errors.ts';
import { type ErrorNote, type FailedRecord, sourceOf } from './dlq-envelope.ts';
import type { SubmissionRecord } from './submission-record.ts';

/** Reasons a redrive can cure once the operator fixes the cause: the subscription, or the tenant's AWS identity. */
const REDRIVABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'customer_not_subscribed',
  'customer_mapping_missing',
  'invalid_license',
  'invalid_customer_identifier',
]);

/** A message on the submission topic that does not parse as a v1 submission record (its bytes kept). */
export function unreadableSubmission(
  topic: string,
  partition: number,
  message: Parameters<typeof sourceOf>[2],
  nowMs: number,
): FailedRecord {
  return {
    version: 1,
    stage: 'submit',
    reason: 'invalid_request',
    detail: 'submission message is not a v1 submission record',
    retriable: false,
    failedAt: new Date(nowMs).toISOString(),
    ...sourceOf(topic, partition, message),
  };
}

export interface SubmitFailure {
  reason: ErrorCode;
  detail: string;
  /** Calls made before giving up, when any were. */
  attempts?: number | undefined;
  /** The records' first failure, when retries happened before this one. */
  firstError?: ErrorNote | undefined;
  failedAt: string;
}

/** One envelope per record AWS did not take; `traceparents[i]` is record i's dead-letter span context. */
export function submitFailures(
  records: readonly SubmissionRecord[],
  failure: SubmitFailure,
  traceparents: readonly (string | undefined)[],
): FailedRecord[] {
  const { reason, detail, attempts, firstError, failedAt } = failure;
  const lastError: ErrorNote = { code: reason, message: detail, at: failedAt };
  return records.map((record, i) => ({
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
  }));
}

/** A failure noted for the envelope's `firstError` (none: AWS returned the records as unprocessed). */
export function errorNote(failure: MeterlineError | undefined, nowMs: number): ErrorNote {
  return {
    code: failure?.code ?? 'aws_unprocessed',
    message: failure?.message ?? 'AWS returned the record as unprocessed',
    at: new Date(nowMs).toISOString(),
  };
}
