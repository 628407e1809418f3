/**
 * The failed-records envelope (schemas/failed-record.v1.schema.json). It keeps the original bytes and
 * where they came from, so a record can be inspected and redriven without guessing.
 */
import type { IHeaders } from 'kafkajs';
import type { ErrorCode } from '../errors.ts';
import type { SubmissionRecord } from './submission-record.ts';

/** ingest: a usage event; commit: a frozen hour that could not be emitted; submit: a record AWS did not take. */
export type FailureStage = 'ingest' | 'commit' | 'submit';

export interface FailedRecord {
  version: 1;
  stage: FailureStage;
  reason: ErrorCode;
  detail: string;
  retriable: boolean;
  failedAt: string;
  source?: {
    topic: string;
    partition: number;
    offset: string;
    key: string | null;
    timestamp: string;
    headers: Record<string, string>;
  };
  /** The original message value, base64; null for a tombstone. */
  originalBase64?: string | null;
  /** For stage=submit and commit: the frozen record that could not be billed (or emitted). */
  record?: SubmissionRecord;
  /** Calls made before giving up (stage=submit). */
  attempts?: number;
  /** The first and the last failure, when they differ in time (retries happened). */
  firstError?: ErrorNote;
  lastError?: ErrorNote;
  /** The last instant AWS accepts the record; a redrive after it is refused. */
  deadline?: string;
  /** customer_mapping_missing at the commit stage: since when the record waited for its tenant's mapping. */
  heldSince?: string;
  /** W3C trace context of the failed input, so its trace can be found. */
  traceContext?: { traceparent: string; tracestate?: string };
}

export interface ErrorNote {
  code: string;
  message: string;
  at: string;
}

export const DLQ_HEADER_STAGE = 'meterline-stage';
export const DLQ_HEADER_REASON = 'meterline-reason';

function headersToStrings(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.map(String).join(',') : String(v);
  }
  return out;
}

/** Where a failed message came from, and its exact bytes, for the envelope. */
export function sourceOf(
  topic: string,
  partition: number,
  m: { offset: string; key: Buffer | null; value: Buffer | null; timestamp: string; headers?: IHeaders },
): Pick<FailedRecord, 'source' | 'originalBase64' | 'traceContext'> {
  const headers = headersToStrings(m.headers);
  return {
    ...(headers.traceparent
      ? {
          traceContext: {
            traceparent: headers.traceparent,
            ...(headers.tracestate ? { tracestate: headers.tracestate } : {}),
          },
        }
      : {}),
    source: {
      topic,
      partition,
      offset: m.offset,
      key: m.key ? m.key.toString('utf8') : null,
      timestamp: new Date(Number(m.timestamp)).toISOString(),
      headers,
    },
    originalBase64: m.value ? m.value.toString('base64') : null,
  };
}

/** The failed-records topic message for an envelope: keyed by record id or source key, with its headers. */
export function dlqMessage(r: FailedRecord): {
  key: string | null;
  value: string;
  headers: Record<string, string>;
} {
  return {
    key: r.record?.recordId ?? r.source?.key ?? null,
    value: JSON.stringify(r),
    headers: { [DLQ_HEADER_STAGE]: r.stage, [DLQ_HEADER_REASON]: r.reason },
  };
}
