/**
 * Decodes a usage message whatever its encoding: JSON, or Avro in the Confluent wire format (magic byte 0,
 * 4-byte schema id, Avro body), side by side on the same topic. Both end in the same validation.
 */
import { isMeterlineError } from '../errors.ts';
import type { DecodeResult, UsageDecoder, ValidationContext } from '../metering/usage-event.ts';
import { decodeJsonEvent, validateEvent } from './event.ts';

/** Turns a Confluent-framed Avro message into a plain event object (fields as in the JSON contract). */
export interface AvroDecoder {
  /** Rejects with a MeterlineError coded `unknown_schema` or `undecodable`. */
  decode(value: Buffer): Promise<unknown>;
}

const CONFLUENT_MAGIC = 0;
const CONFLUENT_HEADER_BYTES = 5;

export function isConfluentFramed(value: Buffer): boolean {
  return value.length > CONFLUENT_HEADER_BYTES && value[0] === CONFLUENT_MAGIC;
}

export class EventDecoder implements UsageDecoder {
  readonly #avro: AvroDecoder | undefined;

  constructor(avro?: AvroDecoder) {
    this.#avro = avro;
  }

  /** Synchronous for JSON (the hot path); a promise only for Avro. */
  decode(value: Buffer | null, ctx: ValidationContext): DecodeResult | Promise<DecodeResult> {
    if (value === null || !isConfluentFramed(value)) return decodeJsonEvent(value, ctx);
    if (value.length > ctx.maxMessageBytes) {
      return {
        ok: false,
        reason: 'message_too_large',
        detail: `message is ${value.length} bytes; the limit is ${ctx.maxMessageBytes}`,
      };
    }
    const avro = this.#avro;
    if (!avro) {
      return {
        ok: false,
        reason: 'unknown_schema',
        detail: `Avro message (schema id ${value.readUInt32BE(1)}) but no schema registry is configured`,
      };
    }
    return avro.decode(value).then(
      (raw) => validateEvent(raw, ctx),
      (error: unknown): DecodeResult => {
        if (isMeterlineError(error) && (error.code === 'unknown_schema' || error.code === 'undecodable')) {
          return { ok: false, reason: error.code, detail: error.message };
        }
        throw error;
      },
    );
  }
}
