/**
 * The in-memory dedupe index: 128-bit id hashes in a typed-array table. Distinct ids never collide,
 * the table grows past its initial capacity without losing an id, deletion keeps every other id
 * findable, and packed hashes load back into an equal index.
 */
import { describe, expect, it } from 'vitest';
import { PartitionDedupe } from '../../../src/state/dedupe-index.ts';
import { HashSet128 } from '../../../src/state/hash-set-128.ts';
import { hashId, hashLatin1Id, ID_HASH_BYTES } from '../../../src/state/id-hash.ts';

const hashOf = (id: string) => {
  const out = new Uint32Array(4);
  hashId(id, out);
  return out;
};
const key = (h: Uint32Array) => [...h].map((w) => w.toString(16).padStart(8, '0')).join('');

describe('hashId', () => {
  it('gives distinct 128-bit hashes to 200,000 distinct ids of every length', () => {
    const byHash = new Map<string, string>();
    let ids = 0;
    let collisions = 0;
    for (let i = 0; i < 200_000; i++) {
      // Lengths 1..40 exercise every tail size; non-ASCII code units too.
      const id = `${i.toString(36)}/${'é-x'.repeat(i % 13)}`.slice(0, 1 + (i % 40));
      const h = key(hashOf(id));
      const other = byHash.get(h);
      if (other === undefined) {
        byHash.set(h, id);
        ids += 1;
      } else if (other !== id) collisions += 1;
    }
    expect(ids).toBeGreaterThan(150_000);
    expect(collisions).toBe(0);
  });

  it('is MurmurHash3 x86_128 (seed 0) of the UTF-16LE code units: the stored format', () => {
    // Reference values from Python's mmh3 (hash128(id.encode('utf-16-le'), 0, x64arch=False)), the
    // 128-bit value read as h1 | h2 << 32 | h3 << 64 | h4 << 96: every tail length and a full block.
    const reference: [string, string][] = [
      ['', '00000000000000000000000000000000'],
      ['a', 'ccef4fe1ccef4fe1ccef4fe1033bb196'],
      ['é-x', '4a268b134a268b1340a2951de5a0958b'],
      ['b1-000000042', '5edba41740aaed76acf15c66e54e2606'],
      ['abababababababababc', '2cba33f70edbdf1f7a302a30173f7a07'],
    ];
    for (const [id, hex] of reference) {
      const h = hashOf(id);
      const value = [...h]
        .reverse()
        .map((w) => w.toString(16).padStart(8, '0'))
        .join('');
      expect(value, id).toBe(hex);
    }
  });

  it('is the same from the bytes of an id as from its string (Latin-1: one code unit per byte)', () => {
    const fromBytes = new Uint32Array(4);
    for (let i = 0; i < 20_000; i++) {
      // Every length up to 140 (past the 128-character limit), every byte value, inside a larger buffer.
      const length = i % 141;
      const bytes = Buffer.from(Array.from({ length }, (_, j) => (i * 31 + j * 97) % 256));
      const framed = Buffer.concat([Buffer.from('{"id":"'), bytes, Buffer.from('"}')]);
      hashLatin1Id(framed, 7, 7 + length, fromBytes);
      expect(key(fromBytes), `length ${length}`).toBe(key(hashOf(bytes.toString('latin1'))));
    }
    hashLatin1Id(Buffer.from('b1-000000042'), 0, 12, fromBytes);
    expect(key(fromBytes)).toBe(key(hashOf('b1-000000042')));
  });

  it('is the same for the same id, every time', () => {
    expect(key(hashOf('b1-000000042'))).toBe(key(hashOf('b1-000000042')));
    expect(key(hashOf('b1-000000042'))).not.toBe(key(hashOf('b1-000000043')));
    expect(key(hashOf(''))).not.toBe(key(hashOf('\u0000')));
  });
});

describe('HashSet128', () => {
  it('holds every distinct id once, growing far past its initial capacity', () => {
    const set = new HashSet128();
    const initial = set.capacity;
    const n = 300_000;
    let added = 0;
    for (let i = 0; i < n; i++) if (set.add(hashOf(`id-${i}`))) added += 1;
    expect(added).toBe(n);
    expect(set.size).toBe(n);
    expect(set.capacity).toBeGreaterThan(initial);
    // At most 70 % full.
    expect(set.size * 10).toBeLessThanOrEqual(set.capacity * 7);
    let again = 0;
    for (let i = 0; i < n; i++) if (set.add(hashOf(`id-${i}`))) again += 1;
    expect(again).toBe(0);
    expect(set.has(hashOf(`id-${n}`))).toBe(false);
    expect(set.size).toBe(n);
  });

  it('stores a hash whose first word is 0 (the empty-slot marker) and tells it apart', () => {
    const set = new HashSet128();
    const zero = new Uint32Array([0, 7, 8, 9]);
    const one = new Uint32Array([1, 7, 8, 9]);
    expect(set.add(zero)).toBe(true);
    expect(set.has(zero)).toBe(true);
    // In memory the two share a slot key: the second is refused as a duplicate of the first (2^-96).
    expect(set.add(one)).toBe(false);
  });

  it('keeps every other id findable when ids are deleted (an undone batch)', () => {
    const set = new HashSet128();
    const n = 50_000;
    for (let i = 0; i < n; i++) set.add(hashOf(`id-${i}`));
    let deleted = 0;
    for (let i = 0; i < n; i += 3) if (set.delete(hashOf(`id-${i}`))) deleted += 1;
    expect(deleted).toBe(Math.ceil(n / 3));
    expect(set.delete(hashOf('id-0'))).toBe(false);
    let wrong = 0;
    for (let i = 0; i < n; i++) if (set.has(hashOf(`id-${i}`)) !== (i % 3 !== 0)) wrong += 1;
    expect(wrong).toBe(0);
    expect(set.size).toBe(n - Math.ceil(n / 3));
  });
});

describe('PartitionDedupe', () => {
  it('loads packed hashes back into an index that knows the same ids, in chunks', () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => `evt-${i}`);
    const packed = Buffer.alloc(ids.length * ID_HASH_BYTES);
    ids.forEach((id, i) => {
      const h = hashOf(id);
      for (let w = 0; w < 4; w++) packed.writeUInt32LE(h[w] as number, i * ID_HASH_BYTES + w * 4);
    });
    const index = new PartitionDedupe('1');
    const half = 5_000 * ID_HASH_BYTES;
    index.load(1_000, 0, [packed.subarray(0, half)], 5);
    index.load(1_000, 1, [packed.subarray(half, half + 16), packed.subarray(half + 16)], 6);
    const hour = index.hour(1_000);
    expect(hour.logEntries).toBe(3);
    expect(hour.size).toBe(ids.length);
    expect(ids.filter((id) => !hour.has(hashOf(id)))).toEqual([]);
    expect(hour.has(hashOf('evt-10000'))).toBe(false);
    // Another hour knows none of them: dedupe is per event hour.
    expect(index.hour(2_000).has(hashOf('evt-1'))).toBe(false);
  });

  it('forgets hours not written for the dedupe ttl, and keeps the others', () => {
    const index = new PartitionDedupe('1');
    index.load(1_000, 0, [], 100);
    index.load(2_000, 0, [], 200);
    index.expire(250, 100);
    expect([...index.hours()].map(([h]) => h)).toEqual([2_000]);
  });
});
