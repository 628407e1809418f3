/**
 * A usage event as the ingest stage hands it to the window stage: decoded and validated, or refused with
 * a stable reason code (the caller dead-letters the original bytes with it). The window stage sees the
 * decoder through `UsageDecoder` only; the application layer gives it ingest's EventDecoder.
 */
import type { ErrorCode } from '../errors.ts';
import type { MeteringApi } from './aws-window.ts';

export interface UsageEvent {
  readonly id: string;
  /** Where the id's bytes are, when the decoder kept them (Latin-1): hashed without making the text. */
  readonly idBytes?: Uint8Array;
  readonly idStart?: number;
  readonly idEnd?: number;
  customer: string;
  dimension: string;
  /** Quantity in integer micro-units: sums stay exact. */
  micros: number;
  timestampMs: number;
  tags?: Record<string, string>;
  /** Why the event's tags were dropped (AWS would refuse them): its usage is billed untagged. */
  untagged?: string;
}

export type IngestReason = Extract<
  ErrorCode,
  | 'empty_message'
  | 'tombstone'
  | 'malformed_json'
  | 'schema_violation'
  | 'timestamp_without_zone'
  | 'invalid_timestamp'
  | 'future_timestamp'
  | 'too_old'
  | 'negative_quantity'
  | 'quantity_out_of_range'
  | 'unknown_dimension'
  | 'message_too_large'
  | 'unknown_schema'
  | 'undecodable'
  | 'late_event'
>;

export type DecodeResult =
  | { ok: true; event: UsageEvent }
  | { ok: false; reason: IngestReason; detail: string };

export interface ValidationContext {
  nowMs: number;
  maxFutureSkewMs: number;
  /** A record must still reach AWS this long before its acceptance deadline. */
  submitMarginMs: number;
  dimensions: ReadonlySet<string>;
  maxMessageBytes: number;
  /** The API records go to: its acceptance window decides `too_old` (BatchMeterUsage when absent). */
  api?: MeteringApi;
}

/** Decodes one usage message (JSON or Avro): synchronous for JSON, a promise only for Avro. */
export interface UsageDecoder {
  decode(value: Buffer | null, ctx: ValidationContext): DecodeResult | Promise<DecodeResult>;
}
