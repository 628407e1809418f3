/**
 * Id hashes spilled from memory to a local file, so a partition's dedupe index holds a bounded number of
 * hashes in memory whatever the dedupe horizon holds (the way Kafka Streams keeps a store in RocksDB on
 * local disk). The file is a cache: Redis's logs stay the truth, and a claim rebuilds it from them.
 *
 * A run is one file of hashes sorted by their first word, with two small things in memory: a blocked
 * Bloom filter (16 bits per hash: about 0.1 % false positives) so a new id almost never reads the disk,
 * and the first word of every 256th hash, so a lookup the filter lets through reads one 4 KB block.
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

/** Sorts hashes (4 words each) by their first word, unsigned: a two-pass LSD radix sort of their indices. */
function sortedOrder(words: Uint32Array): Uint32Array {
  const n = words.length / 4;
  let order = new Uint32Array(n);
  let next = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const counts = new Uint32Array(65_537);
  for (const shift of [0, 16]) {
    counts.fill(0);
    for (let i = 0; i < n; i++) (counts[(((words[i * 4] as number) >>> shift) & 0xffff) + 1] as number)++;
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
  readonly #bits: Uint32Array;
  readonly #blocks: number;

  constructor(hashes: number) {
    this.#blocks = Math.max(1, Math.ceil((hashes * FILTER_BITS_PER_HASH) / (FILTER_BLOCK_WORDS * 32)));
    this.#bits = new Uint32Array(this.#blocks * FILTER_BLOCK_WORDS);
  }

  get bytes(): number {
    return this.#bits.byteLength;
  }

  /** The block of a hash: from its last word. */
  #base(d: number): number {
    return Math.floor((d * this.#blocks) / 4_294_967_296) * FILTER_BLOCK_WORDS;
  }

  #set(base: number, p: number): void {
    const bit = p & 511;
    const w = base + (bit >>> 5);
    this.#bits[w] = (this.#bits[w] as number) | (1 << (bit & 31));
  }

  #test(base: number, p: number): boolean {
    const bit = p & 511;
    return ((this.#bits[base + (bit >>> 5)] as number) & (1 << (bit & 31))) !== 0;
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

/** Hashes a merge writes per write call: 64 KB. */
const WRITE_HASHES = 4_096;

/** The next hash of one sorted input of a merge (its four words), until `done`. */
interface HashSource {
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
  readonly #fd: number;
  readonly #size: number;
  readonly #path: string;
  readonly #block = Buffer.allocUnsafe(BLOCK_HASHES * ID_HASH_BYTES);
  #i = -1;
  #blockStart = 0;
  #blockCount = 0;

  constructor(fd: number, size: number, file: string) {
    this.#fd = fd;
    this.#size = size;
    this.#path = file;
    this.next();
  }

  next(): void {
    if (++this.#i >= this.#size) {
      this.done = true;
      return;
    }
    if (this.#i >= this.#blockStart + this.#blockCount) {
      this.#blockStart = this.#i;
      this.#blockCount = Math.min(BLOCK_HASHES, this.#size - this.#i);
      const want = this.#blockCount * ID_HASH_BYTES;
      for (let at = 0; at < want; ) {
        const n = readSync(this.#fd, this.#block, at, want - at, this.#i * ID_HASH_BYTES + at);
        if (n === 0) throw new Error(`spill file ${this.#path} is shorter than written`);
        at += n;
      }
    }
    const x = (this.#i - this.#blockStart) * ID_HASH_BYTES;
    this.a = this.#block.readUInt32LE(x);
    this.b = this.#block.readUInt32LE(x + 4);
    this.c = this.#block.readUInt32LE(x + 8);
    this.d = this.#block.readUInt32LE(x + 12);
  }
}

/** One spilled run: a sorted file of hashes, its filter, and its sparse index. */
export class SpilledRun {
  readonly size: number;
  readonly path: string;
  readonly #fd: number;
  readonly #filter: HashFilter;
  /** First word of hash 0, 256, 512, … */
  readonly #firsts: Uint32Array;
  readonly #block = Buffer.allocUnsafe(BLOCK_HASHES * ID_HASH_BYTES);

  /**
   * Writes `words` (4 per hash; a first word of 0 must already read 1, as the table keeps it) sorted to a new
   * file, merged with the hashes of `runs` (sorted files already): a k-way merge that reads each run a block at a
   * time, so merging an hour's runs holds no more than its filter in memory, however many hashes it has.
   */
  constructor(words: Uint32Array, file: string, runs: readonly SpilledRun[] = []) {
    let n = words.length / 4;
    for (const run of runs) n += run.size;
    this.path = file;
    this.size = n;
    this.#filter = new HashFilter(n);
    this.#firsts = new Uint32Array(Math.ceil(n / BLOCK_HASHES));
    this.#fd = openSync(file, 'w+');
    try {
      const sources = [
        new SortedWords(words),
        ...runs.map((run) => new RunReader(run.#fd, run.size, run.path)),
      ];
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
        this.#filter.add(a, b, c, d);
        if (i % BLOCK_HASHES === 0) this.#firsts[i / BLOCK_HASHES] = a;
        best.next();
        if (++buffered === WRITE_HASHES || i === n - 1) {
          const bytes = buffered * ID_HASH_BYTES;
          for (let at = 0; at < bytes; ) at += writeSync(this.#fd, out, at, bytes - at, written + at);
          written += bytes;
          buffered = 0;
        }
      }
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Bytes held in memory (the filter and the sparse index). */
  get memoryBytes(): number {
    return this.#filter.bytes + this.#firsts.byteLength;
  }

  has(h: Uint32Array, o = 0): boolean {
    // As the table keeps it: a first word of 0 reads 1.
    const a = h[o] || 1;
    const b = h[o + 1] as number;
    const c = h[o + 2] as number;
    const d = h[o + 3] as number;
    if (!this.#filter.mayHave(a, b, c, d)) return false;
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
      const want = count * ID_HASH_BYTES;
      for (let at = 0; at < want; ) {
        const n = readSync(this.#fd, this.#block, at, want - at, first * ID_HASH_BYTES + at);
        if (n === 0) throw new Error(`spill file ${this.path} is shorter than written`);
        at += n;
      }
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
