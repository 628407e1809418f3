/**
 * The lazy record decoder against kafkajs's own: on any record set (record batches with any mix of keys,
 * values, headers, offsets, timestamps, flags, gzip, a truncated tail), every record must read exactly as
 * kafkajs's decoder gives it, and kafkajs's consumer batch must keep exactly the same records.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { installLazyRecords, LazyRecord, lazyRecordsInstalled } from '../../../src/kafka/lazy-records.ts';

const require = createRequire(import.meta.url);
const root = path.dirname(require.resolve('kafkajs/package.json'));
const src = (file: string) => path.join(root, 'src', file);

type DecodeMessages = (decoder: unknown) => Promise<Record<string, unknown>[]>;
type Decode = (raw: Buffer) => Promise<{ responses: { partitions: { messages: unknown[] }[] }[] }>;
const Decoder = require(src('protocol/decoder.js')) as new (b: Buffer) => unknown;
const Batch = require(src('consumer/batch.js')) as new (
  topic: string,
  fetchedOffset: string,
  partitionData: unknown,
) => { messages: Record<string, unknown>[]; lastOffset(): string; firstOffset(): string | null };
// kafkajs's own decoders, taken before the lazy one is installed.
const kafkajsDecodeMessages = require(src('protocol/requests/fetch/v4/decodeMessages.js')) as DecodeMessages;
const kafkajsFetchV11 = require(src('protocol/requests/fetch/v11/response.js')) as { decode: Decode };

expect(installLazyRecords()).toBe(true);
const lazyDecodeMessages = require(src('protocol/requests/fetch/v4/decodeMessages.js')) as DecodeMessages;
const lazyFetchV11 = require(src('protocol/requests/fetch/v11/response.js')) as { decode: Decode };

// --- a byte-level record batch writer (the spec's layout; CRC is not checked by either decoder) ---

function varint(n: number): Buffer {
  let z = n >= 0 ? 2 * n : -2 * n - 1;
  const out: number[] = [];
  while (z >= 0x80) {
    out.push((z % 128) | 0x80);
    z = Math.floor(z / 128);
  }
  out.push(z);
  return Buffer.from(out);
}

function varlong(n: bigint): Buffer {
  let z = BigInt.asUintN(64, (n << 1n) ^ (n >> 63n));
  const out: number[] = [];
  while (z >= 0x80n) {
    out.push(Number(z & 0x7fn) | 0x80);
    z >>= 7n;
  }
  out.push(Number(z));
  return Buffer.from(out);
}

const bytes = (b: Buffer | null) => (b === null ? varint(-1) : Buffer.concat([varint(b.length), b]));

interface RecordSpec {
  timestampDelta: bigint;
  offsetDelta: number;
  key: Buffer | null;
  value: Buffer | null;
  headers: [string | null, Buffer | null][];
}

interface BatchSpec {
  firstOffset: bigint;
  firstTimestamp: bigint;
  maxTimestamp: bigint;
  producerId: bigint;
  leaderEpoch: number;
  producerEpoch: number;
  firstSequence: number;
  transactional: boolean;
  control: boolean;
  logAppendTime: boolean;
  gzip: boolean;
  records: RecordSpec[];
}

function record(r: RecordSpec): Buffer {
  const headers = Buffer.concat([
    varint(r.headers.length),
    ...r.headers.map(([k, v]) => Buffer.concat([bytes(k === null ? null : Buffer.from(k)), bytes(v)])),
  ]);
  const body = Buffer.concat([
    Buffer.from([0]),
    varlong(r.timestampDelta),
    varint(r.offsetDelta),
    bytes(r.key),
    bytes(r.value),
    headers,
  ]);
  return Buffer.concat([varint(body.length), body]);
}

function batch(b: BatchSpec): Buffer {
  const attributes =
    (b.gzip ? 1 : 0) | (b.logAppendTime ? 0x8 : 0) | (b.transactional ? 0x10 : 0) | (b.control ? 0x20 : 0);
  const records = Buffer.concat(b.records.map(record));
  const head = Buffer.alloc(49);
  head.writeInt32BE(b.leaderEpoch, 0);
  head.writeInt8(2, 4);
  head.writeUInt32BE(0, 5);
  head.writeInt16BE(attributes, 9);
  head.writeInt32BE(Math.max(0, b.records.length - 1), 11);
  head.writeBigInt64BE(b.firstTimestamp, 15);
  head.writeBigInt64BE(b.maxTimestamp, 23);
  head.writeBigInt64BE(b.producerId, 31);
  head.writeInt16BE(b.producerEpoch, 39);
  head.writeInt32BE(b.firstSequence, 41);
  head.writeInt32BE(b.records.length, 45);
  const body = Buffer.concat([head, b.gzip ? gzipSync(records) : records]);
  const prefix = Buffer.alloc(12);
  prefix.writeBigInt64BE(b.firstOffset, 0);
  prefix.writeInt32BE(body.length, 8);
  return Buffer.concat([prefix, body]);
}

/** A partition's record set as a fetch response carries it: its size, then the batches. */
function recordSet(batches: Buffer[], cut: number): Buffer {
  const all = Buffer.concat(batches);
  const set = all.subarray(0, Math.max(0, all.length - cut));
  const size = Buffer.alloc(4);
  size.writeInt32BE(set.length, 0);
  return Buffer.concat([size, set]);
}

// --- generators ---

const bufferOrNull = fc.option(
  fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  { nil: null },
);
const headerKey = fc.option(fc.constantFrom('trace', 'x', 'meterline-forwarded', 'é', 'k2'), { nil: null });
const recordSpec: fc.Arbitrary<RecordSpec> = fc.record({
  timestampDelta: fc.oneof(
    fc.bigInt({ min: 0n, max: 10_000n }),
    fc.bigInt({ min: -(1n << 62n), max: 1n << 62n }),
  ),
  offsetDelta: fc.oneof(fc.nat({ max: 1000 }), fc.integer({ min: -5, max: 2 ** 30 })),
  key: bufferOrNull,
  value: bufferOrNull,
  headers: fc.array(fc.tuple(headerKey, bufferOrNull), { maxLength: 4 }),
});
const int64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
const batchSpec: fc.Arbitrary<BatchSpec> = fc.record({
  firstOffset: fc.oneof(fc.bigInt({ min: 0n, max: 1n << 40n }), int64),
  firstTimestamp: fc.oneof(fc.bigInt({ min: -1n, max: 1n << 42n }), int64),
  maxTimestamp: fc.oneof(fc.bigInt({ min: -1n, max: 1n << 42n }), int64),
  producerId: fc.oneof(fc.constant(-1n), fc.bigInt({ min: 0n, max: 1000n })),
  leaderEpoch: fc.integer({ min: -1, max: 1000 }),
  producerEpoch: fc.integer({ min: -1, max: 1000 }),
  firstSequence: fc.integer({ min: -1, max: 1 << 20 }),
  transactional: fc.boolean(),
  control: fc.boolean(),
  logAppendTime: fc.boolean(),
  gzip: fc.boolean(),
  records: fc.array(recordSpec, { maxLength: 6 }),
});

/** A record as plain data, for comparison: what a consumer of kafkajs can read from it. */
function plain(m: Record<string, unknown>) {
  const buf = (b: unknown) => (b === null ? null : [...(b as Buffer)]);
  const headers = m.headers as Record<string, Buffer | null | (Buffer | null)[]>;
  return {
    magicByte: m.magicByte,
    attributes: m.attributes,
    timestamp: m.timestamp,
    offset: m.offset,
    key: buf(m.key),
    value: buf(m.value),
    headers: Object.fromEntries(
      Object.entries(headers).map(([k, v]) => [k, Array.isArray(v) ? v.map(buf) : buf(v)]),
    ),
    isControlRecord: m.isControlRecord,
    batchContext: m.batchContext,
  };
}

async function bothWays(set: Buffer) {
  const ours = await lazyDecodeMessages(new Decoder(set));
  if (set.length > 4 && set.length <= 4 + 16) {
    // kafkajs reads the magic byte past the end of a set this short, and fails the whole fetch on it; no
    // batch fits in it (a batch takes 61 bytes at least), so there is nothing to read.
    await expect(kafkajsDecodeMessages(new Decoder(set))).rejects.toThrow(RangeError);
    expect(ours).toEqual([]);
    return { theirs: ours, ours };
  }
  const theirs = await kafkajsDecodeMessages(new Decoder(set));
  return { theirs, ours };
}

describe('lazy record decoding', () => {
  it('is installed, and replaces kafkajs decoder in the fetch responses', async () => {
    expect(lazyRecordsInstalled()).toBe(true);
    const set = recordSet(
      [
        batch({
          firstOffset: 7n,
          firstTimestamp: 1_764_000_000_000n,
          maxTimestamp: 1_764_000_000_005n,
          producerId: -1n,
          leaderEpoch: 0,
          producerEpoch: -1,
          firstSequence: -1,
          transactional: false,
          control: false,
          logAppendTime: false,
          gzip: false,
          records: [
            {
              timestampDelta: 5n,
              offsetDelta: 0,
              key: Buffer.from('c1'),
              value: Buffer.from('{}'),
              headers: [],
            },
          ],
        }),
      ],
      0,
    );
    // A v11 fetch response with one topic and one partition holding the set.
    const head = Buffer.alloc(4 + 2 + 4 + 4);
    head.writeInt32BE(1, 10);
    const topic = Buffer.concat([Buffer.from([0, 5]), Buffer.from('usage'), Buffer.from([0, 0, 0, 1])]);
    const partition = Buffer.alloc(4 + 2 + 8 + 8 + 8 + 4 + 4);
    partition.writeInt32BE(3, 0);
    partition.writeBigInt64BE(8n, 6);
    partition.writeBigInt64BE(8n, 14);
    partition.writeInt32BE(-1, 30);
    partition.writeInt32BE(-1, 34);
    const response = Buffer.concat([head, topic, partition, set]);
    const theirs = await kafkajsFetchV11.decode(response);
    const ours = await lazyFetchV11.decode(response);
    const [m] = ours.responses[0]?.partitions[0]?.messages ?? [];
    expect(m).toBeInstanceOf(LazyRecord);
    expect(theirs.responses[0]?.partitions[0]?.messages[0]).not.toBeInstanceOf(LazyRecord);
    expect(plain(m as Record<string, unknown>)).toEqual(
      plain(theirs.responses[0]?.partitions[0]?.messages[0] as Record<string, unknown>),
    );
    expect((m as LazyRecord).offset).toBe('7');
    expect((m as LazyRecord).timestamp).toBe('1764000000005');
  });

  it('reads every record exactly as kafkajs does, on any record set', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(batchSpec, { minLength: 1, maxLength: 4 }),
        fc.nat({ max: 80 }),
        async (batches, cut) => {
          const set = recordSet(batches.map(batch), cut);
          const { theirs, ours } = await bothWays(set);
          expect(ours.map(plain)).toEqual(theirs.map(plain));
          // The window stage's numeric read of the broker timestamp.
          expect(ours.map((m) => (m as unknown as LazyRecord).timestampMs)).toEqual(
            theirs.map((m) => Number(m.timestamp)),
          );
          // The same records once kafkajs's consumer has filtered the fetch (offsets, aborted transactions).
          const first = theirs[0]?.offset as string | undefined;
          const aborted = batches
            .filter((b) => b.transactional && !b.control)
            .slice(0, 1)
            .map((b) => ({ producerId: b.producerId.toString(), firstOffset: b.firstOffset.toString() }));
          const partition = (messages: unknown[]) => ({
            partition: 0,
            highWatermark: '0',
            abortedTransactions: aborted,
            messages,
          });
          if (first !== undefined) {
            const a = new Batch('t', first, partition(theirs));
            const b = new Batch('t', first, partition(ours));
            expect(b.messages.map(plain)).toEqual(a.messages.map(plain));
            expect(b.lastOffset()).toBe(a.lastOffset());
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('gives kafkajs types throughout', async () => {
    const set = recordSet(
      [
        batch({
          firstOffset: (1n << 60n) + 3n,
          firstTimestamp: 1_764_000_000_000n,
          maxTimestamp: 1_764_000_000_000n,
          producerId: 5n,
          leaderEpoch: 0,
          producerEpoch: 0,
          firstSequence: 0,
          transactional: true,
          control: false,
          logAppendTime: false,
          gzip: true,
          records: [
            {
              timestampDelta: 1n,
              offsetDelta: 1,
              key: null,
              value: Buffer.from('v'),
              headers: [
                ['x', Buffer.from('1')],
                ['x', Buffer.from('2')],
                ['x', null],
              ],
            },
          ],
        }),
      ],
      0,
    );
    const [m] = (await lazyDecodeMessages(new Decoder(set))) as unknown as LazyRecord[];
    if (!m) throw new Error('no record');
    expect(m.value).toEqual(m.value);
    expect(Buffer.isBuffer(m.value)).toBe(true);
    expect(m.key).toBeNull();
    expect(m.offset).toBe(((1n << 60n) + 4n).toString());
    expect(m.headers).toEqual({ x: [Buffer.from('1'), Buffer.from('2'), null] });
    expect(JSON.parse(JSON.stringify(m))).toMatchObject({ offset: m.offset, timestamp: '1764000000001' });
  });

  it('keeps a header named like an Object property as a header', async () => {
    const set = recordSet(
      [
        batch({
          firstOffset: 0n,
          firstTimestamp: 0n,
          maxTimestamp: 0n,
          producerId: -1n,
          leaderEpoch: 0,
          producerEpoch: 0,
          firstSequence: 0,
          transactional: false,
          control: false,
          logAppendTime: false,
          gzip: false,
          records: [
            {
              timestampDelta: 0n,
              offsetDelta: 0,
              key: null,
              value: null,
              headers: [
                ['__proto__', Buffer.from('p')],
                ['constructor', Buffer.from('c')],
              ],
            },
          ],
        }),
      ],
      0,
    );
    const [m] = (await lazyDecodeMessages(new Decoder(set))) as unknown as LazyRecord[];
    if (!m) throw new Error('no record');
    expect(Object.getPrototypeOf(m.headers)).toBe(Object.prototype);
    expect(Object.keys(m.headers)).toEqual(['__proto__', 'constructor']);
    expect(String(m.headers.constructor)).toBe('c');
  });
});
