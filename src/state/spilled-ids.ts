/**
 * Id hashes spilled from memory to a local file, so a partition's dedupe index holds a bounded number of
 * hashes in memory whatever the dedupe horizon holds (the way Kafka Streams keeps a store in RocksDB on
 * local disk). The file is a cache: Redis's logs stay the truth, and a claim rebuilds it from them.
 *
 * A run is one file of hashes sorted by their first word, then its filter: a blocked Bloom filter (16 bits
 * per hash: about 0.1 % false positives) so a new id almost never reads the disk. The filter is in memory
 * while the run's hour is being written, and only on disk once it is idle (`cool`): memory then does not grow
 * with the ids the dedupe horizon holds, only with those of the hours in use. In memory always: the first word
 * of every 256th hash, so a lookup reads one 4 KB block.
 */
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { ID_HASH_BYTES } from './id-hash.ts';

const BLOCK_HASHES = 256;
const FILTER_BITS_PER_HASH = 16;
/** Words of one filter block: 512 bits, one cache line of 64 bytes. */
const FILTER_BLOCK_WORDS = 16;

/**
 * The hashes of `words` (4 words each; a first word of 0 is an empty slot, skipped) in order of their first
 * word, unsigned: a two-pass LSD radix sort of their indices.
 */
function sortedOrder(words: Uint32Array): Uint32Array {
  let n = 0;
  for (let x = 0; x < words.length; x += 4) if (words[x] !== 0) n += 1;
  let order = new Uint32Array(n);
  let next = new Uint32Array(n);
  for (let x = 0, i = 0; x < words.length; x += 4) if (words[x] !== 0) order[i++] = x / 4;
  const counts = new Uint32Array(65_537);
  for (const shift of [0, 16]) {
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const at = order[i] as number;
      (counts[(((words[at * 4] as number) >>> shift) & 0xffff) + 1] as number)++;
    }
    for (let d = 1; d < counts.length; d++) counts[d] = (counts[d] as number) + (counts[d - 1] as number);
    for (let i = 0; i < n; i++) {
      const at = order[i] as number;
      next[(counts[((words[at * 4] as number) >>> shift) & 0xffff] as number)++] = at;
    }
    [order, next] = [next, order];
  }
  return order;
}

/** A blocked Bloom filter over hashes that are already uniform: its probes are bits of the hash itself. */
class HashFilter {
  readonly bits: Uint32Array;
  readonly #blocks: number;

  /** An empty filter sized for `hashes`, or one read back (`bits` of that size). */
  constructor(hashes: number, bits?: Uint32Array) {
    this.#blocks = HashFilter.blocks(hashes);
    this.bits = bits ?? new Uint32Array(this.#blocks * FILTER_BLOCK_WORDS);
  }

  static blocks(hashes: number): number {
    return Math.max(1, Math.ceil((hashes * FILTER_BITS_PER_HASH) / (FILTER_BLOCK_WORDS * 32)));
  }

  get bytes(): number {
    return this.bits.byteLength;
  }

  /** The block of a hash: from its last word. */
  #base(d: number): number {
    return Math.floor((d * this.#blocks) / 4_294_967_296) * FILTER_BLOCK_WORDS;
  }

  #set(base: number, p: number): void {
    const bit = p & 511;
    const w = base + (bit >>> 5);
    this.bits[w] = (this.bits[w] as number) | (1 << (bit & 31));
  }

  #test(base: number, p: number): boolean {
    const bit = p & 511;
    return ((this.bits[base + (bit >>> 5)] as number) & (1 << (bit & 31))) !== 0;
  }

  /** Sets 8 bits of one block, taken 9 at a time from the first three words. */
  add(a: number, b: number, c: number, d: number): void {
    const base = this.#base(d);
    this.#set(base, a);
    this.#set(base, a >>> 9);
    this.#set(base, a >>> 18);
    this.#set(base, b);
    this.#set(base, b >>> 9);
    this.#set(base, b >>> 18);
    this.#set(base, c);
    this.#set(base, c >>> 9);
  }

  mayHave(a: number, b: number, c: number, d: number): boolean {
    const base = this.#base(d);
    return (
      this.#test(base, a) &&
      this.#test(base, a >>> 9) &&
      this.#test(base, a >>> 18) &&
      this.#test(base, b) &&
      this.#test(base, b >>> 9) &&
      this.#test(base, b >>> 18) &&
      this.#test(base, c) &&
      this.#test(base, c >>> 9)
    );
  }
}

/** A folder of spill files, made on first use; what a killed process left behind is swept at start and then. */
export class SpillFolder {
  readonly #root: string;
  #dir: string | undefined;
  #files = 0;

  constructor(root: string) {
    this.#root = root;
  }

  /**
   * Removes what processes that are gone left here, at once: a restarted pod keeps its emptyDir, and the
   * new process's own spills would otherwise come on top of its predecessor's files.
   */
  sweep(): void {
    try {
      removeOrphans(this.#root);
    } catch {
      // No folder yet: nothing to sweep. An unreadable one shows when the first spill fails (a metric).
    }
  }

  /** A new file's path. */
  file(): string {
    if (!this.#dir) {
      mkdirSync(this.#root, { recursive: true });
      removeOrphans(this.#root);
      this.#dir = mkdtempSync(path.join(this.#root, `meterline-dedupe-${process.pid}-`));
      live.add(this.#dir);
    }
    this.#files += 1;
    return path.join(this.#dir, `${this.#files}.ids`);
  }

  /** Removes the folder and every file in it. */
  close(): void {
    if (!this.#dir) return;
    rmSync(this.#dir, { recursive: true, force: true });
    live.delete(this.#dir);
    this.#dir = undefined;
  }
}

const live = new Set<string>();
process.once('exit', () => {
  for (const dir of live) rmSync(dir, { recursive: true, force: true });
});

/** Removes spill folders of processes that are gone (a kill -9, a container restarted with the same pid). */
function removeOrphans(root: string): void {
  for (const name of readdirSync(root)) {
    const m = /^meterline-dedupe-(\d+)-/.exec(name);
    if (!m) continue;
    const dir = path.join(root, name);
    const pid = Number(m[1]);
    if (live.has(dir)) continue;
    if (pid !== process.pid && isAlive(pid)) continue;
    rmSync(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes `bytes` of `buffer` at `position`, however many calls it takes. */
function writeAll(fd: number, buffer: Buffer, bytes: number, position: number): void {
  for (let at = 0; at < bytes; ) at += writeSync(fd, buffer, at, bytes - at, position + at);
}

/** Fills `into` from the file at `position`; a file shorter than that was cut (it is written whole). */
function readAll(fd: number, into: Buffer | Uint8Array, position: number, file: string): void {
  for (let at = 0; at < into.length; ) {
    const n = readSync(fd, into, at, into.length - at, position + at);
    if (n === 0) throw new Error(`spill file ${file} is shorter than written`);
    at += n;
  }
}

/** Hashes a merge writes per write call: 64 KB. */
const WRITE_HASHES = 4_096;

/** The next hash of one sorted input of a merge (its four words), until `done`. */
interface HashSource {
  /** Hashes in all. */
  readonly size: number;
  done: boolean;
  a: number;
  b: number;
  c: number;
  d: number;
  next(): void;
}

/** Hashes in memory, in sorted order. */
class SortedWords implements HashSource {
  done = false;
  a = 0;
  b = 0;
  c = 0;
  d = 0;
  readonly #words: Uint32Array;
  readonly #order: Uint32Array;
  #i = -1;

  constructor(words: Uint32Array) {
    this.#words = words;
    this.#order = sortedOrder(words);
    this.next();
  }

  get size(): number {
    return this.#order.length;
  }

  next(): void {
    if (++this.#i >= this.#order.length) {
      this.done = true;
      return;
    }
    const at = (this.#order[this.#i] as number) * 4;
    this.a = this.#words[at] as number;
    this.b = this.#words[at + 1] as number;
    this.c = this.#words[at + 2] as number;
    this.d = this.#words[at + 3] as number;
  }
}

/** A spilled run's file, read a block at a time. */
class RunReader implements HashSource {
  done = false;
  a = 0;
  b = 0;
  c = 0;
  d = 0;
  readonly size: number;
  readonly #fd: number;
  readonly #path: string;
  readonly #block = Buffer.allocUnsafe(BLOCK_HASHES * ID_HASH_BYTES);
  #i = -1;
  #blockStart = 0;
  #blockCount = 0;

  constructor(fd: number, size: number, file: string) {
    this.#fd = fd;
    this.size = size;
    this.#path = file;
    this.next();
  }

  next(): void {
    if (++this.#i >= this.size) {
      this.done = true;
      return;
    }
    if (this.#i >= this.#blockStart + this.#blockCount) {
      this.#blockStart = this.#i;
      this.#blockCount = Math.min(BLOCK_HASHES, this.size - this.#i);
      const bytes = this.#block.subarray(0, this.#blockCount * ID_HASH_BYTES);
      readAll(this.#fd, bytes, this.#i * ID_HASH_BYTES, this.#path);
    }
    const x = (this.#i - this.#blockStart) * ID_HASH_BYTES;
    this.a = this.#block.readUInt32LE(x);
    this.b = this.#block.readUInt32LE(x + 4);
    this.c = this.#block.readUInt32LE(x + 8);
    this.d = this.#block.readUInt32LE(x + 12);
  }
}

/** One spilled run: a sorted file of hashes and its filter, the filter also in memory while warm, and its sparse index. */
export class SpilledRun {
  readonly size: number;
  readonly path: string;
  readonly #fd: number;
  /** Blocks read from the file by lookups (a filter let them through, or there was none). */
  reads = 0;
  /** In memory while the run is warm; on disk after the hashes always. */
  #filter: HashFilter | undefined;
  /** First word of hash 0, 256, 512, … */
  readonly #firsts: Uint32Array;
  readonly #block = Buffer.allocUnsafe(BLOCK_HASHES * ID_HASH_BYTES);

  /**
   * Writes the hashes of `words` (4 words each; a first word of 0 is an empty slot, skipped, so a hash table's
   * own slots can be passed; a hash's first word of 0 must already read 1, as the table keeps it) sorted to a
   * new file, merged with the hashes of `runs` (sorted files already): a k-way merge that reads each run a block
   * at a time, so merging an hour's runs holds no more than its filter in memory, however many hashes it has.
   */
  constructor(words: Uint32Array, file: string, runs: readonly SpilledRun[] = []) {
    this.path = file;
    this.#fd = openSync(file, 'w+');
    try {
      const sources = [
        new SortedWords(words),
        ...runs.map((run) => new RunReader(run.#fd, run.size, run.path)),
      ];
      let n = 0;
      for (const source of sources) n += source.size;
      this.size = n;
      const filter = new HashFilter(n);
      this.#filter = filter;
      this.#firsts = new Uint32Array(Math.ceil(n / BLOCK_HASHES));
      const out = Buffer.allocUnsafe(WRITE_HASHES * ID_HASH_BYTES);
      let buffered = 0;
      let written = 0;
      for (let i = 0; i < n; i++) {
        // The source whose next hash has the smallest first word (unsigned): at most five of them.
        let best = sources[0] as HashSource;
        for (let k = 1; k < sources.length; k++) {
          const source = sources[k] as HashSource;
          if (best.done || (!source.done && source.a < best.a)) best = source;
        }
        const { a, b, c, d } = best;
        const x = buffered * ID_HASH_BYTES;
        out.writeUInt32LE(a, x);
        out.writeUInt32LE(b, x + 4);
        out.writeUInt32LE(c, x + 8);
        out.writeUInt32LE(d, x + 12);
        filter.add(a, b, c, d);
        if (i % BLOCK_HASHES === 0) this.#firsts[i / BLOCK_HASHES] = a;
        best.next();
        if (++buffered === WRITE_HASHES || i === n - 1) {
          const bytes = buffered * ID_HASH_BYTES;
          writeAll(this.#fd, out, bytes, written);
          written += bytes;
          buffered = 0;
        }
      }
      // The filter goes after the hashes, so a cooled run can take it back without reading them all.
      writeAll(
        this.#fd,
        Buffer.from(filter.bits.buffer, filter.bits.byteOffset, filter.bits.byteLength),
        filter.bytes,
        written,
      );
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Bytes held in memory (the filter while warm, and the sparse index). */
  get memoryBytes(): number {
    return (this.#filter?.bytes ?? 0) + this.#firsts.byteLength;
  }

  /** Whether the filter is on disk only. */
  get cool(): boolean {
    return this.#filter === undefined;
  }

  /** Lets the filter go from memory: every lookup then reads a block of the file. */
  coolDown(): void {
    this.#filter = undefined;
  }

  /** Reads the filter back from the file. */
  rewarm(): void {
    if (this.#filter) return;
    const bits = new Uint32Array(HashFilter.blocks(this.size) * FILTER_BLOCK_WORDS);
    readAll(this.#fd, Buffer.from(bits.buffer), this.size * ID_HASH_BYTES, this.path);
    this.#filter = new HashFilter(this.size, bits);
  }

  has(h: Uint32Array, o = 0): boolean {
    // As the table keeps it: a first word of 0 reads 1.
    const a = h[o] || 1;
    const b = h[o + 1] as number;
    const c = h[o + 2] as number;
    const d = h[o + 3] as number;
    if (this.#filter && !this.#filter.mayHave(a, b, c, d)) return false;
    // The last block that starts below `a`: equal first words may begin in the block before the one starting with `a`.
    let lo = 0;
    let hi = this.#firsts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((this.#firsts[mid] as number) < a) lo = mid;
      else hi = mid - 1;
    }
    for (let block = lo; block < this.#firsts.length; block++) {
      const first = block * BLOCK_HASHES;
      const count = Math.min(BLOCK_HASHES, this.size - first);
      readAll(this.#fd, this.#block.subarray(0, count * ID_HASH_BYTES), first * ID_HASH_BYTES, this.path);
      this.reads += 1;
      for (let i = 0; i < count; i++) {
        const x = i * ID_HASH_BYTES;
        const w0 = this.#block.readUInt32LE(x);
        if (w0 > a) return false;
        if (
          w0 === a &&
          this.#block.readUInt32LE(x + 4) === b &&
          this.#block.readUInt32LE(x + 8) === c &&
          this.#block.readUInt32LE(x + 12) === d
        )
          return true;
      }
    }
    return false;
  }

  /** Closes and deletes the file. */
  close(): void {
    try {
      closeSync(this.#fd);
    } catch {
      // Already closed.
    }
    rmSync(this.path, { force: true });
  }
}
