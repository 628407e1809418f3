/**
 * The fast path of JSON decoding: reads a usage event straight from its bytes, without building the string
 * of the whole message or an object of its fields. It takes only the common shape: one object with exactly
 * the five required fields in any order, printable-ASCII strings without escapes, a non-negative quantity,
 * and a canonical UTC timestamp (`2026-11-27T17:05:00Z`, up to 3 fraction digits, day ≤ 28). Anything else
 * (tags, unknown fields, escapes, non-ASCII, epoch timestamps, offsets, bad input of any kind) returns
 * false and goes to the full parser, which gives the answer and every rejection: this path never refuses
 * an event, so it cannot give a reason code the full parser would not.
 */
import { daysFromCivil, MAX_EPOCH_MS, MIN_EPOCH_MS } from '../time/timestamp.ts';

/** The fields the fast path read; valid only after `scanEvent` returned true. */
export interface ScannedEvent {
  id: string;
  customer: string;
  dimension: string;
  quantity: number;
  timestampMs: number;
}

export const newScannedEvent = (): ScannedEvent => ({
  id: '',
  customer: '',
  dimension: '',
  quantity: 0,
  timestampMs: 0,
});

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ID = 1;
const CUSTOMER = 2;
const DIMENSION = 4;
const QUANTITY = 8;
const TIMESTAMP = 16;
const ALL = ID | CUSTOMER | DIMENSION | QUANTITY | TIMESTAMP;

/**
 * Customer and dimension names repeat across events: one string per distinct name, found by a hash of its
 * bytes, instead of a new string per event (fewer allocations, and Map lookups reuse the string's hash).
 */
const INTERN_SLOTS = 4096;
const interned: (string | undefined)[] = new Array(INTERN_SLOTS).fill(undefined);

function intern(buf: Buffer, start: number, end: number, hash: number): string {
  const slot = hash & (INTERN_SLOTS - 1);
  const s = interned[slot];
  const len = end - start;
  if (s !== undefined && s.length === len) {
    let i = 0;
    while (i < len && s.charCodeAt(i) === buf[start + i]) i++;
    if (i === len) return s;
  }
  const fresh = buf.toString('latin1', start, end);
  interned[slot] = fresh;
  return fresh;
}

let pos = 0;
/** FNV-1a of the last string scanned. */
let strHash = 0;

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

function skipSpace(buf: Buffer): void {
  while (pos < buf.length && isSpace(buf[pos] as number)) pos++;
}

/**
 * A string of 1..max printable ASCII characters from `pos` (just after its opening quote): returns the
 * index of its closing quote, or -1. Control characters, escapes and non-ASCII bytes send the message to
 * the full parser.
 */
function scanString(buf: Buffer, max: number): number {
  const start = pos;
  let h = 0x811c9dc5;
  for (let i = pos; i < buf.length; i++) {
    const c = buf[i] as number;
    if (c === QUOTE) {
      const len = i - start;
      if (len < 1 || len > max) return -1;
      pos = i + 1;
      strHash = h;
      return i;
    }
    if (c < 0x20 || c > 0x7e || c === BACKSLASH) return -1;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return -1;
}

const digit = (buf: Buffer, i: number) => (buf[i] as number) - 48;
const isDigit = (c: number) => c >= 48 && c <= 57;

/**
 * A non-negative JSON number from `pos`, as JSON.parse would read it; -1 when it is not one (or negative:
 * the full parser gives the reason).
 */
function scanQuantity(buf: Buffer): number {
  const start = pos;
  let i = pos;
  let int = 0;
  if (buf[i] === 48) i++;
  else if (i < buf.length && isDigit(buf[i] as number) && buf[i] !== 48) {
    while (i < buf.length && isDigit(buf[i] as number)) {
      int = int * 10 + digit(buf, i);
      i++;
    }
  } else return -1;
  const intDigits = i - start;
  let simple = true;
  if (buf[i] === 0x2e) {
    simple = false;
    i++;
    const f = i;
    while (i < buf.length && isDigit(buf[i] as number)) i++;
    if (i === f) return -1;
  }
  if (buf[i] === 0x65 || buf[i] === 0x45) {
    simple = false;
    i++;
    if (buf[i] === 0x2b || buf[i] === 0x2d) i++;
    const e = i;
    while (i < buf.length && isDigit(buf[i] as number)) i++;
    if (i === e) return -1;
  }
  pos = i;
  // Up to 15 integer digits sum exactly in a double; anything else is read the way JSON.parse reads it.
  if (simple && intDigits <= 15) return int;
  return Number(buf.toString('latin1', start, i));
}

/** A canonical UTC timestamp string from `pos` (after its quote): epoch ms, or -1. */
function scanTimestamp(buf: Buffer): number {
  const s = pos;
  const q = scanString(buf, 24);
  if (q < 0) return -1;
  const len = q - s;
  if (len !== 20 && (len < 22 || len > 24)) return -1;
  if (buf[s + 4] !== 0x2d || buf[s + 7] !== 0x2d || buf[s + 10] !== 0x54) return -1;
  if (buf[s + 13] !== 0x3a || buf[s + 16] !== 0x3a || buf[q - 1] !== 0x5a) return -1;
  for (const i of DIGIT_AT) if (!isDigit(buf[s + i] as number)) return -1;
  let millis = 0;
  if (len > 20) {
    if (buf[s + 19] !== 0x2e) return -1;
    // .1 is 100 ms, .12 is 120 ms.
    for (let i = s + 20, scale = 100; i < q - 1; i++, scale /= 10) {
      if (!isDigit(buf[i] as number)) return -1;
      millis += digit(buf, i) * scale;
    }
  }
  const two = (i: number) => digit(buf, s + i) * 10 + digit(buf, s + i + 1);
  const month = two(5);
  const day = two(8);
  const hour = two(11);
  const minute = two(14);
  const second = two(17);
  // Days up to 28 exist in every month: later days go to the full parser's calendar check.
  if (month < 1 || month > 12 || day < 1 || day > 28 || hour > 23 || minute > 59 || second > 59) return -1;
  const ms =
    daysFromCivil(two(0) * 100 + two(2), month, day) * 86_400_000 +
    hour * 3_600_000 +
    minute * 60_000 +
    second * 1000 +
    millis;
  return ms >= MIN_EPOCH_MS && ms <= MAX_EPOCH_MS ? ms : -1;
}

const DIGIT_AT = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];

const KEYS: [number, number[]][] = (
  [
    [ID, 'id'],
    [CUSTOMER, 'customer'],
    [DIMENSION, 'dimension'],
    [QUANTITY, 'quantity'],
    [TIMESTAMP, 'timestamp'],
  ] as const
).map(([bit, name]) => [bit, [...name].map((ch) => ch.charCodeAt(0))]);

/** Which field a key names (its bit), or 0 for any other key. */
function keyAt(buf: Buffer, start: number, len: number): number {
  for (const [bit, name] of KEYS) {
    if (name.length !== len || name[0] !== buf[start]) continue;
    let i = 1;
    while (i < len && name[i] === buf[start + i]) i++;
    return i === len ? bit : 0;
  }
  return 0;
}

/**
 * Reads the event in `buf` into `out` when it has the common shape and every field is valid as the full
 * parser checks it; false sends the message to the full parser.
 */
export function scanEvent(
  buf: Buffer,
  out: ScannedEvent,
  maxIdChars: number,
  maxDimensionChars: number,
): boolean {
  pos = 0;
  skipSpace(buf);
  if (buf[pos] !== 0x7b) return false;
  pos++;
  let seen = 0;
  for (;;) {
    skipSpace(buf);
    if (buf[pos] !== QUOTE) return false;
    pos++;
    const k = pos;
    const kq = scanString(buf, 9);
    if (kq < 0) return false;
    const field = keyAt(buf, k, kq - k);
    // Unknown or repeated keys (JSON.parse keeps the last) are the full parser's to judge.
    if (field === 0 || seen & field) return false;
    seen |= field;
    skipSpace(buf);
    if (buf[pos] !== 0x3a) return false;
    pos++;
    skipSpace(buf);
    if (field === QUANTITY) {
      const q = scanQuantity(buf);
      if (q < 0) return false;
      out.quantity = q;
    } else {
      if (buf[pos] !== QUOTE) return false;
      pos++;
      const s = pos;
      if (field === TIMESTAMP) {
        const ms = scanTimestamp(buf);
        if (ms < 0) return false;
        out.timestampMs = ms;
      } else {
        const q = scanString(buf, field === DIMENSION ? maxDimensionChars : maxIdChars);
        if (q < 0) return false;
        if (field === ID) out.id = buf.toString('latin1', s, q);
        else if (field === CUSTOMER) out.customer = intern(buf, s, q, strHash);
        else out.dimension = intern(buf, s, q, strHash);
      }
    }
    skipSpace(buf);
    const c = buf[pos];
    pos++;
    if (c === 0x2c) continue;
    if (c !== 0x7d) return false;
    break;
  }
  skipSpace(buf);
  return pos === buf.length && seen === ALL;
}
