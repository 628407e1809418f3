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
  /** The id's bytes in the message: [idStart, idEnd). */
  idStart: number;
  idEnd: number;
  customer: string;
  dimension: string;
  quantity: number;
  timestampMs: number;
}

export const newScannedEvent = (): ScannedEvent => ({
  idStart: 0,
  idEnd: 0,
  customer: '',
  dimension: '',
  quantity: 0,
  timestampMs: 0,
});

/**
 * Buffer's own one-byte decoder, which `toString('latin1', …)` calls after checking its arguments: called
 * directly it saves a tenth of a microsecond per string, and the bounds here are always in range.
 */
const latin1 = (buf: Buffer, start: number, end: number): string =>
  (buf as Buffer & { latin1Slice(start: number, end: number): string }).latin1Slice(start, end);

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ID = 1;
const CUSTOMER = 2;
const DIMENSION = 4;
const QUANTITY = 8;
const TIMESTAMP = 16;
const ALL = ID | CUSTOMER | DIMENSION | QUANTITY | TIMESTAMP;

/** Each key's bytes after its first, with the closing quote: the first byte picks the key. */
const bytes = (s: string) => Uint8Array.from(s, (ch) => ch.charCodeAt(0));
const ID_REST = bytes('d"');
const CUSTOMER_REST = bytes('ustomer"');
const DIMENSION_REST = bytes('imension"');
const QUANTITY_REST = bytes('uantity"');
const TIMESTAMP_REST = bytes('imestamp"');

/**
 * Customer and dimension names repeat across events: one string per distinct name, found by a hash of its
 * bytes, instead of a new string per event (fewer allocations, and Map lookups reuse the string's hash).
 * Open addressing over a few slots; when they are all taken by other names, the first is replaced, so the
 * table stays bounded with any number of names (a name it lost costs a new string, as without it).
 */
const INTERN_SLOTS = 16_384;
const INTERN_PROBES = 4;
const interned: string[] = new Array<string>(INTERN_SLOTS).fill('');

/**
 * A name's first slot: FNV-1a over its bytes, then MurmurHash3's finalizer (FNV alone leaves a last byte's
 * change in the low bits), so names that differ in any byte spread over the table.
 */
export function internSlot(buf: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ (buf[i] as number), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 18;
}

function intern(buf: Buffer, start: number, end: number): string {
  const len = end - start;
  const first = internSlot(buf, start, end);
  let free = first;
  for (let probe = 0; probe < INTERN_PROBES; probe++) {
    const slot = (first + probe) & (INTERN_SLOTS - 1);
    const s = interned[slot] as string;
    if (s.length === 0) {
      free = slot;
      break;
    }
    if (s.length !== len) continue;
    let i = len - 1;
    while (i >= 0 && s.charCodeAt(i) === buf[start + i]) i--;
    if (i < 0) return s;
  }
  // The empty slot the probe stopped at, or the first one probed when all were taken.
  const fresh = latin1(buf, start, end);
  interned[free] = fresh;
  return fresh;
}

const isSpace = (c: number | undefined) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
const isDigit = (c: number | undefined) => c !== undefined && c >= 48 && c <= 57;

/** Whether `rest` follows at `at`. */
function follows(buf: Buffer, at: number, rest: Uint8Array): boolean {
  for (let i = 0; i < rest.length; i++) if (buf[at + i] !== rest[i]) return false;
  return true;
}

/** The field a key starting at `at` (after its quote) names, or 0 for any other key. */
function keyAt(buf: Buffer, at: number): number {
  switch (buf[at]) {
    case 0x69:
      return follows(buf, at + 1, ID_REST) ? ID : 0;
    case 0x63:
      return follows(buf, at + 1, CUSTOMER_REST) ? CUSTOMER : 0;
    case 0x64:
      return follows(buf, at + 1, DIMENSION_REST) ? DIMENSION : 0;
    case 0x71:
      return follows(buf, at + 1, QUANTITY_REST) ? QUANTITY : 0;
    case 0x74:
      return follows(buf, at + 1, TIMESTAMP_REST) ? TIMESTAMP : 0;
    default:
      return 0;
  }
}

/** Bytes of a key, both quotes included. */
const keyBytes = (field: number) => (field === ID ? 4 : field === CUSTOMER || field === QUANTITY ? 10 : 11);

/**
 * The closing quote of a string of 1..max printable ASCII characters starting at `at` (after its opening
 * quote), or -1. Control characters, escapes and non-ASCII bytes send the message to the full parser.
 */
function stringEnd(buf: Buffer, at: number, max: number): number {
  const limit = Math.min(buf.length, at + max + 1);
  for (let i = at; i < limit; i++) {
    const c = buf[i] as number;
    if (c === QUOTE) return i > at ? i : -1;
    if (c < 0x20 || c > 0x7e || c === BACKSLASH) return -1;
  }
  return -1;
}

/** Where the last number scanned ended. */
let numberEnd = 0;

/**
 * A non-negative JSON number at `at`, as JSON.parse reads it; -1 when it is not one (or negative: the
 * full parser gives the reason).
 */
function scanQuantity(buf: Buffer, at: number): number {
  let i = at;
  let int = 0;
  const first = buf[i];
  if (first === 48) i++;
  else if (isDigit(first)) {
    while (isDigit(buf[i])) {
      int = int * 10 + ((buf[i] as number) - 48);
      i++;
    }
  } else return -1;
  const intDigits = i - at;
  let simple = true;
  if (buf[i] === 0x2e) {
    simple = false;
    const f = ++i;
    while (isDigit(buf[i])) i++;
    if (i === f) return -1;
  }
  if (buf[i] === 0x65 || buf[i] === 0x45) {
    simple = false;
    i++;
    if (buf[i] === 0x2b || buf[i] === 0x2d) i++;
    const e = i;
    while (isDigit(buf[i])) i++;
    if (i === e) return -1;
  }
  numberEnd = i;
  // Up to 15 integer digits sum exactly in a double; anything else is read the way JSON.parse reads it.
  if (simple && intDigits <= 15) return int;
  return Number(latin1(buf, at, i));
}

const two = (buf: Buffer, i: number) => ((buf[i] as number) - 48) * 10 + ((buf[i + 1] as number) - 48);

/** A canonical UTC timestamp between `s` (after its quote) and its closing quote `q`: epoch ms, or -1. */
function timestampMs(buf: Buffer, s: number, q: number): number {
  const len = q - s;
  if (len !== 20 && (len < 22 || len > 24)) return -1;
  if (buf[s + 4] !== 0x2d || buf[s + 7] !== 0x2d || buf[s + 10] !== 0x54) return -1;
  if (buf[s + 13] !== 0x3a || buf[s + 16] !== 0x3a || buf[q - 1] !== 0x5a) return -1;
  for (let d = 0; d < DIGIT_AT.length; d++) if (!isDigit(buf[s + (DIGIT_AT[d] as number)])) return -1;
  let millis = 0;
  if (len > 20) {
    if (buf[s + 19] !== 0x2e) return -1;
    // .1 is 100 ms, .12 is 120 ms.
    for (let i = s + 20, scale = 100; i < q - 1; i++, scale /= 10) {
      if (!isDigit(buf[i])) return -1;
      millis += ((buf[i] as number) - 48) * scale;
    }
  }
  const month = two(buf, s + 5);
  const day = two(buf, s + 8);
  const hour = two(buf, s + 11);
  const minute = two(buf, s + 14);
  const second = two(buf, s + 17);
  // Days up to 28 exist in every month: later days go to the full parser's calendar check.
  if (month < 1 || month > 12 || day < 1 || day > 28 || hour > 23 || minute > 59 || second > 59) return -1;
  const ms =
    daysFromCivil(two(buf, s) * 100 + two(buf, s + 2), month, day) * 86_400_000 +
    hour * 3_600_000 +
    minute * 60_000 +
    second * 1000 +
    millis;
  return ms >= MIN_EPOCH_MS && ms <= MAX_EPOCH_MS ? ms : -1;
}

const DIGIT_AT = Uint8Array.of(0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18);

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
  const n = buf.length;
  let p = 0;
  while (isSpace(buf[p])) p++;
  if (buf[p] !== 0x7b) return false;
  p++;
  let seen = 0;
  for (;;) {
    while (isSpace(buf[p])) p++;
    if (buf[p] !== QUOTE) return false;
    const field = keyAt(buf, p + 1);
    // Unknown or repeated keys (JSON.parse keeps the last) are the full parser's to judge.
    if (field === 0 || (seen & field) !== 0) return false;
    seen |= field;
    p += keyBytes(field);
    while (isSpace(buf[p])) p++;
    if (buf[p] !== 0x3a) return false;
    p++;
    while (isSpace(buf[p])) p++;
    if (field === QUANTITY) {
      const q = scanQuantity(buf, p);
      if (q < 0) return false;
      out.quantity = q;
      p = numberEnd;
    } else {
      if (buf[p] !== QUOTE) return false;
      const s = p + 1;
      const q = stringEnd(
        buf,
        s,
        field === DIMENSION ? maxDimensionChars : field === TIMESTAMP ? 24 : maxIdChars,
      );
      if (q < 0) return false;
      if (field === ID) {
        out.idStart = s;
        out.idEnd = q;
      } else if (field === CUSTOMER) out.customer = intern(buf, s, q);
      else if (field === DIMENSION) out.dimension = intern(buf, s, q);
      else {
        const ms = timestampMs(buf, s, q);
        if (ms < 0) return false;
        out.timestampMs = ms;
      }
      p = q + 1;
    }
    while (isSpace(buf[p])) p++;
    const c = buf[p++];
    if (c === 0x2c) continue;
    if (c !== 0x7d) return false;
    break;
  }
  while (isSpace(buf[p])) p++;
  return p === n && seen === ALL;
}
