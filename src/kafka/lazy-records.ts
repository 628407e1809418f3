/**
 * A leaner decoder for kafkajs fetch responses. kafkajs 2.2.4 decodes every record of a fetch into about ten
 * objects (a Buffer per record, key and value, a Decoder, BigInt-backed Longs for its timestamp and offset
 * parsed from strings, a headers object built by spreading) before the consumer sees the first one: most
 * of a bare consumer's CPU, and most of the heap a fetch holds while its batches are processed. Here each
 * record is one small object over the fetch's bytes; its offset, timestamp, key, value and headers are read
 * from the bytes when asked for, with exactly the values and types kafkajs gives (`KafkaMessage`).
 *
 * It replaces one internal module of kafkajs, the record-set decoder that every fetch response version
 * (v4 to v11) calls, and only for the version it was written against (kafkajs has had no release since
 * 2.2.4); any other version keeps its own decoder. Record batches (magic 2) only: a legacy message set goes to
 * kafkajs's decoder. A truncated last batch is dropped as kafkajs drops it (the broker cuts fetches at their
 * byte bound), and compressed batches use kafkajs's registered codecs.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { IHeaders } from 'kafkajs';

const KAFKAJS_VERSION = '2.2.4';
const MAGIC_OFFSET = 16;
const RECORD_BATCH_OVERHEAD = 49;
const TIMESTAMP_TYPE_FLAG_MASK = 0x8;
const TRANSACTIONAL_FLAG_MASK = 0x10;
const CONTROL_FLAG_MASK = 0x20;
const LOG_APPEND_TIME = 1;
const CREATE_TIME = 0;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The batch fields kafkajs gives every record as `batchContext` (one object per batch). */
interface BatchContext {
  firstOffset: string;
  firstTimestamp: string;
  partitionLeaderEpoch: number;
  inTransaction: boolean;
  isControlBatch: boolean;
  lastOffsetDelta: number;
  producerId: string;
  producerEpoch: number;
  firstSequence: number;
  maxTimestamp: string;
  timestampType: number;
  magicByte: number;
}

/** What the records of one batch share: the bytes they live in and the bases their deltas add to. */
interface Shared {
  readonly buf: Buffer;
  /** First offset as a number when it is a safe integer, else undefined (then `bigOffset` is used). */
  readonly baseOffset: number | undefined;
  readonly bigOffset: bigint;
  readonly baseTimestamp: number | undefined;
  readonly bigTimestamp: bigint;
  /** The batch's max timestamp when the broker set the time (LOG_APPEND_TIME), else undefined. */
  readonly appendTime: string | undefined;
}

interface KafkajsInternals {
  Decoder: new (buffer: Buffer) => unknown;
  decodeMessageSet: (decoder: unknown, size: number) => unknown;
  lookupCodecByAttributes: (attributes: number) => { decompress(b: Buffer): Promise<Buffer> } | null;
}

/**
 * One record of a fetch, read from its bytes on first access. Small on purpose (a fetch's records all live
 * until its last batch is through): the batch it belongs to, where its body starts, its offset delta (every
 * record's offset is read when kafkajs filters the fetch).
 */
export class LazyRecord {
  readonly batchContext: BatchContext;
  readonly #s: Shared;
  /** Where the record's body (its attributes byte) starts in the shared buffer. */
  readonly #at: number;
  readonly #offsetDelta: number;

  constructor(s: Shared, context: BatchContext, at: number, offsetDelta: number) {
    this.batchContext = context;
    this.#s = s;
    this.#at = at;
    this.#offsetDelta = offsetDelta;
  }

  get magicByte(): number {
    return this.batchContext.magicByte;
  }

  get isControlRecord(): boolean {
    return this.batchContext.isControlBatch;
  }

  get attributes(): number {
    return ((this.#s.buf[this.#at] as number) << 24) >> 24;
  }

  get offset(): string {
    // Not kept: a string per record held until its batch is through costs more (in garbage collection)
    // than making it again on the rare second read.
    const s = this.#s;
    return s.baseOffset !== undefined && this.#offsetDelta >= 0
      ? String(s.baseOffset + this.#offsetDelta)
      : (s.bigOffset + BigInt(this.#offsetDelta)).toString();
  }

  get timestamp(): string {
    return this.#s.appendTime ?? String(this.#timestampNumber());
  }

  /** `timestamp` as a number of ms, without the string (the window stage reads every record's). */
  get timestampMs(): number {
    return Number(this.#s.appendTime ?? this.#timestampNumber());
  }

  get key(): Buffer | null {
    const c = this.#cursor();
    c.varLong();
    c.varInt();
    return c.slice();
  }

  get value(): Buffer | null {
    const c = this.#cursor();
    c.varLong();
    c.varInt();
    c.bytes();
    return c.slice();
  }

  get headers(): IHeaders {
    const c = this.#cursor();
    c.varLong();
    c.varInt();
    c.bytes();
    c.bytes();
    return readHeaders(c);
  }

  /** The plain-object form kafkajs would have built (for logs and `JSON.stringify`). */
  toJSON(): Record<string, unknown> {
    const { magicByte, attributes, timestamp, offset, key, value, headers, isControlRecord, batchContext } =
      this;
    return { magicByte, attributes, timestamp, offset, key, value, headers, isControlRecord, batchContext };
  }

  /** A cursor after the attributes byte, at the timestamp delta. */
  #cursor(): Cursor {
    return new Cursor(this.#s.buf, this.#at + 1);
  }

  /** The record's create time: a number while exact, else the exact decimal text. */
  #timestampNumber(): number | string {
    const s = this.#s;
    const delta = this.#cursor().varLong();
    return s.baseTimestamp !== undefined && typeof delta === 'number'
      ? s.baseTimestamp + delta
      : (s.bigTimestamp + BigInt(delta)).toString();
  }
}

/** A cursor over a buffer with kafkajs's varint rules (same results, bit for bit, on any input). */
class Cursor {
  readonly buf: Buffer;
  at: number;
  /** Where the byte string `bytes()` skipped last starts. */
  found = 0;
  constructor(buf: Buffer, at: number) {
    this.buf = buf;
    this.at = at;
  }

  varInt(): number {
    const buf = this.buf;
    let byte: number;
    let result = 0;
    let shift = 0;
    do {
      byte = buf[this.at++] as number;
      result += (byte & 0x7f) << shift;
      shift += 7;
    } while (byte >= 0x80);
    return (result >>> 1) ^ -(result & 1);
  }

  /** A zigzag varlong: a number while it is exact (up to 7 bytes, 49 bits), a bigint beyond. */
  varLong(): number | bigint {
    const buf = this.buf;
    const start = this.at;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      const byte = buf[this.at++] as number;
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result % 2 === 1 ? -(result + 1) / 2 : result / 2;
      scale *= 128;
    }
    this.at = start;
    return this.#bigVarLong();
  }

  #bigVarLong(): bigint {
    let result = 0n;
    let shift = 0n;
    let byte: number;
    do {
      // kafkajs refuses a varlong longer than ten bytes.
      if (shift > 63n) throw new RangeError('Invalid Long, must contain 9 bytes or less');
      byte = this.buf[this.at++] as number;
      result += BigInt(byte & 0x7f) << shift;
      shift += 7n;
    } while (byte >= 0x80);
    const unsigned = BigInt.asUintN(64, result);
    return BigInt.asIntN(64, (unsigned >> 1n) ^ -(unsigned & 1n));
  }

  /** Reads a varint-length byte string as a view of the buffer (kafkajs's `Buffer#slice`), or null. */
  slice(): Buffer | null {
    const length = this.bytes();
    return length === -1 ? null : this.buf.subarray(this.found, this.found + length);
  }

  /** Skips a varint-length byte string: returns its length (-1 for null) and leaves its start in `found`. */
  bytes(): number {
    const length = this.varInt();
    this.found = this.at;
    if (length !== -1) this.at += length;
    return length;
  }
}

function readHeaders(c: Cursor): IHeaders {
  const buf = c.buf;
  const count = c.varInt();
  const headers: IHeaders = {};
  for (let i = 0; i < count; i++) {
    const keyLength = c.bytes();
    const key =
      keyLength === -1 ? null : buf.toString('utf8', c.found, Math.min(c.found + keyLength, buf.length));
    const valueLength = c.bytes();
    const value = valueLength === -1 ? null : buf.subarray(c.found, c.found + valueLength);
    // kafkajs's rule: a repeated key collects its values into an array, in order. Own properties only, so a
    // header named `__proto__` or `constructor` is a header like any other.
    const name = String(key);
    const seen = Object.hasOwn(headers, name) ? headers[name] : undefined;
    Object.defineProperty(headers, name, {
      value: seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return headers;
}

/** Reads one record at the cursor (its length prefix first) into a LazyRecord. */
function readRecord(c: Cursor, s: Shared, context: BatchContext): LazyRecord {
  const length = c.varInt();
  const end = c.at + length;
  const at = c.at;
  c.at += 1;
  c.varLong();
  const record = new LazyRecord(s, context, at, c.varInt());
  // The next record starts after this one's length, whatever its fields hold.
  c.at = end;
  return record;
}

function shared(
  buf: Buffer,
  firstOffset: bigint,
  firstTimestamp: bigint,
  appendTime: string | undefined,
): Shared {
  const safe = (v: bigint) => (v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : undefined);
  return {
    buf,
    baseOffset: safe(firstOffset),
    bigOffset: firstOffset,
    baseTimestamp: safe(firstTimestamp),
    bigTimestamp: firstTimestamp,
    appendTime,
  };
}

/**
 * Decodes the record batches of one partition's record set (`buf`), as kafkajs's `decodeMessages` does;
 * stops at a truncated last batch.
 */
export async function decodeRecordBatches(buf: Buffer, k: KafkajsInternals): Promise<LazyRecord[]> {
  const records: LazyRecord[] = [];
  let at = 0;
  while (buf.length - at >= RECORD_BATCH_OVERHEAD) {
    const firstOffset = buf.readBigInt64BE(at);
    const length = buf.readInt32BE(at + 8);
    const start = at + 12;
    at = start + length;
    if (buf.length - start < length) {
      // kafkajs throws its partial-message error here, which its caller takes as the end of the set.
      break;
    }
    const partitionLeaderEpoch = buf.readInt32BE(start);
    const magicByte = buf.readInt8(start + 4);
    const attributes = buf.readInt16BE(start + 9);
    const lastOffsetDelta = buf.readInt32BE(start + 11);
    const firstTimestamp = buf.readBigInt64BE(start + 15);
    const maxTimestamp = buf.readBigInt64BE(start + 23).toString();
    const producerId = buf.readBigInt64BE(start + 31).toString();
    const producerEpoch = buf.readInt16BE(start + 39);
    const firstSequence = buf.readInt32BE(start + 41);
    const timestampType = (attributes & TIMESTAMP_TYPE_FLAG_MASK) > 0 ? LOG_APPEND_TIME : CREATE_TIME;
    const context: BatchContext = {
      firstOffset: firstOffset.toString(),
      firstTimestamp: firstTimestamp.toString(),
      partitionLeaderEpoch,
      inTransaction: (attributes & TRANSACTIONAL_FLAG_MASK) > 0,
      isControlBatch: (attributes & CONTROL_FLAG_MASK) > 0,
      lastOffsetDelta,
      producerId,
      producerEpoch,
      firstSequence,
      maxTimestamp,
      timestampType,
      magicByte,
    };
    // kafkajs takes the broker's time when it set it, unless the max timestamp is empty (never, as a string).
    const appendTime = timestampType === LOG_APPEND_TIME && maxTimestamp ? maxTimestamp : undefined;
    const codec = k.lookupCodecByAttributes(attributes);
    const end = start + length;
    const count = buf.readInt32BE(start + 45);
    if (!codec) {
      if (count === -1) continue;
      const s = shared(buf, firstOffset, firstTimestamp, appendTime);
      const c = new Cursor(buf.subarray(0, end), start + 49);
      for (let i = 0; i < count; i++) records.push(readRecord(c, s, context));
      continue;
    }
    if (count <= 0) continue;
    const plain = await codec.decompress(buf.subarray(start + 49, end));
    const s = shared(plain, firstOffset, firstTimestamp, appendTime);
    const c = new Cursor(plain, 0);
    for (let i = 0; i < count; i++) records.push(readRecord(c, s, context));
  }
  return records;
}

let installed: boolean | undefined;

/**
 * Makes kafkajs decode fetched records lazily (see the module comment), once per process; a no-op on a
 * kafkajs version other than the one this was written against. Returns whether it is in effect.
 */
export function installLazyRecords(): boolean {
  if (installed !== undefined) return installed;
  const require = createRequire(import.meta.url);
  const root = path.dirname(require.resolve('kafkajs/package.json'));
  const version = (require(path.join(root, 'package.json')) as { version: string }).version;
  if (version !== KAFKAJS_VERSION) {
    installed = false;
    return installed;
  }
  const src = (file: string) => path.join(root, 'src', file);
  const internals: KafkajsInternals = {
    Decoder: require(src('protocol/decoder.js')),
    decodeMessageSet: require(src('protocol/messageSet/decoder.js')),
    lookupCodecByAttributes: require(src('protocol/message/compression/index.js')).lookupCodecByAttributes,
  };
  const decodeMessages = async (decoder: {
    readInt32(): number;
    canReadBytes(n: number): boolean;
    readBytes(n: number): Buffer;
  }) => {
    const size = decoder.readInt32();
    if (size <= 0 || !decoder.canReadBytes(size)) return [];
    const buf = decoder.readBytes(size);
    if (buf.length <= MAGIC_OFFSET || buf.readInt8(MAGIC_OFFSET) !== 2) {
      return internals.decodeMessageSet(new internals.Decoder(buf), size);
    }
    return decodeRecordBatches(buf, internals);
  };
  const target = src('protocol/requests/fetch/v4/decodeMessages.js');
  require(target);
  const cached = require.cache[target];
  if (!cached) {
    installed = false;
    return installed;
  }
  cached.exports = decodeMessages;
  // The fetch response decoders took the old function when they loaded: load them again (kafkajs requires
  // them on every fetch, so the next fetch picks the new ones up).
  for (let v = 4; v <= 11; v++) delete require.cache[src(`protocol/requests/fetch/v${v}/response.js`)];
  installed = true;
  return installed;
}

/** Whether this process decodes fetched records lazily (the bench checks its bare consumer does not). */
export function lazyRecordsInstalled(): boolean {
  return installed === true;
}
