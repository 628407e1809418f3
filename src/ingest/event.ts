/**
 * Decoding and validation of usage events (contract v1, schemas/usage-event.v1.schema.json). Every
 * rejection has a stable reason code; the caller dead-letters the original bytes with it.
 */
import { acceptanceDeadline, type MeteringApi } from '../metering/aws-window.ts';
import type { DecodeResult, IngestReason, UsageEvent, ValidationContext } from '../metering/usage-event.ts';
import { hourStart } from '../time/hours.ts';
import { parseEventTimestamp } from '../time/timestamp.ts';
import { newScannedEvent, scanEvent } from './json-scan.ts';

export const MICROS = 1_000_000;
/** The largest quantity whose micro-units stay an exact integer in a double. */
export const MAX_QUANTITY = Math.floor(Number.MAX_SAFE_INTEGER / MICROS);
const MAX_ID_CHARS = 128;
const MAX_DIMENSION_CHARS = 255;
const TAG_PATTERN = /^[a-zA-Z0-9+ -=._:/@]+$/;
const MAX_TAGS = 5;

/** The acceptance deadline of the last hour asked about: events of a batch mostly share an hour. */
let lastHour = Number.NaN;
let lastApi: MeteringApi = 'BatchMeterUsage';
let lastDeadline = 0;
function deadlineOfHour(api: MeteringApi, hourMs: number): number {
  if (hourMs !== lastHour || api !== lastApi) {
    lastHour = hourMs;
    lastApi = api;
    lastDeadline = acceptanceDeadline(api, hourMs);
  }
  return lastDeadline;
}

const fail = (reason: IngestReason, detail: string): DecodeResult => ({ ok: false, reason, detail });

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what it finds
const CONTROL = /[\u0000-\u001f\u007f]/;

/** 1..max characters and no control characters: ids and names travel newline- and ␟-separated in Redis. */
const isText = (v: unknown, max: number): v is string =>
  typeof v === 'string' && v.length >= 1 && v.length <= max && !CONTROL.test(v);

/** The fast path's output, reused: it is read before the next message is scanned. */
const scanned = newScannedEvent();

export function decodeJsonEvent(value: Buffer | null, ctx: ValidationContext): DecodeResult {
  if (value === null) return fail('tombstone', 'message has no value (tombstone)');
  if (value.length === 0) return fail('empty_message', 'message value is empty');
  if (value.length > ctx.maxMessageBytes) {
    return fail('message_too_large', `message is ${value.length} bytes; the limit is ${ctx.maxMessageBytes}`);
  }
  // The fast path reads any finite quantity: one out of range gets its reason from the full parser.
  if (scanEvent(value, scanned, MAX_ID_CHARS, MAX_DIMENSION_CHARS) && scanned.quantity <= MAX_QUANTITY) {
    const e = scanned;
    return (
      refusal(e.dimension, e.timestampMs, ctx) ?? {
        ok: true,
        event: new ScannedUsageEvent(
          value,
          e.idStart,
          e.idEnd,
          e.customer,
          e.dimension,
          Math.round(e.quantity * MICROS),
          e.timestampMs,
        ),
      }
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(value.toString('utf8'));
  } catch (error) {
    return fail('malformed_json', (error as Error).message);
  }
  return validateEvent(raw, ctx);
}

export function validateEvent(raw: unknown, ctx: ValidationContext): DecodeResult {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return fail('schema_violation', 'event must be a JSON object');
  }
  const e = raw as Record<string, unknown>;
  // Read each field once, by name: this runs for every event.
  const { id, customer, dimension, quantity, timestamp } = e;
  const missing =
    id == null
      ? 'id'
      : customer == null
        ? 'customer'
        : dimension == null
          ? 'dimension'
          : quantity == null
            ? 'quantity'
            : timestamp == null
              ? 'timestamp'
              : undefined;
  if (missing) return fail('schema_violation', `missing required field "${missing}"`);
  if (!isText(id, MAX_ID_CHARS))
    return fail(
      'schema_violation',
      '"id" must be a string of 1 to 128 characters, without control characters',
    );
  if (!isText(customer, MAX_ID_CHARS))
    return fail(
      'schema_violation',
      '"customer" must be a string of 1 to 128 characters, without control characters',
    );
  if (!isText(dimension, MAX_DIMENSION_CHARS))
    return fail(
      'schema_violation',
      '"dimension" must be a string of 1 to 255 characters, without control characters',
    );
  const q = quantity;
  if (typeof q !== 'number' || !Number.isFinite(q))
    return fail('schema_violation', '"quantity" must be a finite number');
  if (q < 0) return fail('negative_quantity', `quantity ${q} is negative`);
  if (q > MAX_QUANTITY) return fail('quantity_out_of_range', `quantity ${q} exceeds ${MAX_QUANTITY}`);

  let tags: Record<string, string> | undefined;
  let untagged: string | undefined;
  if (e.tags !== undefined) {
    const t = e.tags;
    if (typeof t !== 'object' || t === null || Array.isArray(t))
      return fail('schema_violation', '"tags" must be an object');
    const entries = Object.entries(t);
    // A tag set AWS would refuse costs the allocation, not the revenue: the usage is billed untagged.
    if (entries.length > MAX_TAGS)
      untagged = `"tags" has ${entries.length} entries; AWS takes at most ${MAX_TAGS}`;
    for (const [k, v] of entries) {
      if (typeof v !== 'string') return fail('schema_violation', `tag "${k}" must have a string value`);
      if (untagged) continue;
      if (k.length > 100 || !TAG_PATTERN.test(k)) untagged = `tag key "${k}" is not allowed by AWS`;
      else if (v.length < 1 || v.length > 256 || !TAG_PATTERN.test(v))
        untagged = `tag "${k}" has a value AWS does not allow`;
    }
    if (entries.length && !untagged) tags = Object.fromEntries(entries) as Record<string, string>;
  }

  const ts = parseEventTimestamp(timestamp);
  if (!ts.ok) return fail(ts.reason, ts.detail);
  const refused = refusal(dimension, ts.ms, ctx);
  if (refused) return refused;
  const event: UsageEvent = { id, customer, dimension, micros: Math.round(q * MICROS), timestampMs: ts.ms };
  if (tags) event.tags = tags;
  if (untagged) event.untagged = untagged;
  return { ok: true, event };
}

/**
 * The checks against this processor's clock and plan, shared by the fast path and the full parser: the
 * refusal, or undefined when the event is accepted.
 */
function refusal(dimension: string, timestampMs: number, ctx: ValidationContext): DecodeResult | undefined {
  if (timestampMs > ctx.nowMs + ctx.maxFutureSkewMs) {
    return fail(
      'future_timestamp',
      `timestamp is ${Math.round((timestampMs - ctx.nowMs) / 1000)}s ahead of this processor's clock`,
    );
  }
  const deadline = deadlineOfHour(ctx.api ?? 'BatchMeterUsage', hourStart(timestampMs));
  if (ctx.nowMs > deadline - ctx.submitMarginMs) {
    return fail(
      'too_old',
      `the hour of ${new Date(timestampMs).toISOString()} can no longer reach AWS in time`,
    );
  }
  if (!ctx.dimensions.has(dimension))
    return fail('unknown_dimension', `dimension "${dimension}" is not in the metering plan`);
  return undefined;
}

/**
 * An event the fast path read: its id stays in the message's bytes (Latin-1, which the fast path checked
 * is printable ASCII) until something asks for the text. The window store hashes it from the bytes.
 */
class ScannedUsageEvent implements UsageEvent {
  readonly idBytes: Buffer;
  readonly idStart: number;
  readonly idEnd: number;
  readonly customer: string;
  readonly dimension: string;
  readonly micros: number;
  readonly timestampMs: number;

  constructor(
    idBytes: Buffer,
    idStart: number,
    idEnd: number,
    customer: string,
    dimension: string,
    micros: number,
    timestampMs: number,
  ) {
    this.idBytes = idBytes;
    this.idStart = idStart;
    this.idEnd = idEnd;
    this.customer = customer;
    this.dimension = dimension;
    this.micros = micros;
    this.timestampMs = timestampMs;
  }

  get id(): string {
    return this.idBytes.toString('latin1', this.idStart, this.idEnd);
  }
}
