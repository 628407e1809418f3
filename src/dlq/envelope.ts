/**
 * The failed-records envelope (schemas/failed-record.v1.schema.json). It keeps the original bytes and
 * where they came from, so a record can be inspected and redriven without guessing.
 */
import type { IHeaders } from 'kafkajs';
import type { SubmissionRecord } from '../commit/submission-record.ts';
import type { ErrorCode } from '../errors.ts';

export type FailureStage = 'ingest' | 'submit';

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
  /** For stage=submit: the frozen record that could not be billed. */
  record?: SubmissionRecord;
  attempts?: number;
}

export const DLQ_HEADER_STAGE = 'meterline-stage';
export const DLQ_HEADER_REASON = 'meterline-reason';

export function headersToStrings(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.map(String).join(',') : String(v);
  }
  return out;
}
