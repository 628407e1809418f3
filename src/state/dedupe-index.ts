/**
 * The dedupe index of one partition: per event hour, the 128-bit hashes (id-hash.ts) of the ids counted.
 * The newest are in memory (a HashSet128); when the partition holds more than its share of the process's
 * budget, an hour's hashes spill to a sorted file with a filter in memory (spilled-ids.ts), so memory stays
 * flat however many ids the dedupe horizon holds. The runs' filters stay in memory only while their hour is
 * being written: an idle hour's lookups (a late event) read its files, so memory grows with the ids of the
 * hours in use, not with every hour the horizon holds. Redis keeps the same hashes, packed 16 bytes each, one
 * list entry per batch and hour (applyBatch.lua): that is what the index is restored from.
 */
import { HashSet128 } from './hash-set-128.ts';
import { ID_HASH_BYTES } from './id-hash.ts';
import { SpilledRun, type SpillFolder } from './spilled-ids.ts';

/** An hour's hot set smaller than this never spills: runs stay few and worth a file. */
const MIN_SPILL = 4_096;
/** Runs an hour may have before they merge into one: a new id checks every run's filter. */
const MAX_RUNS = 4;
/** Batches of its partition that land without writing an hour before its runs cool (their filters leave memory). */
const IDLE_BATCHES = 2;
/**
 * Lookups into an hour with cooled runs before their filters come back into memory: a stray late event reads
 * a few blocks, an hour in use again gets its filters back after a few milliseconds of reads.
 */
const REWARM_AFTER = 256;

/** Where a partition's index spills, and how many hashes it may keep in memory. */
export interface SpillPolicy {
  folder: SpillFolder;
  /** Hashes in memory over all hours; more spill, the largest hour first. */
  budget: number;
}

/**
 * One hour's ids: the newest in memory, older ones in spilled runs; the entries of its Redis log they
 * reflect, and when it was last written.
 */
export class HourIds {
  hot = new HashSet128();
  runs: SpilledRun[] = [];
  logEntries = 0;
  writtenAtMs = 0;
  /** The partition's batch that last wrote the hour (PartitionDedupe.landed). */
  lastBatch = 0;
  /** Whether the runs' filters are on disk only. */
  #cool = false;
  #coolLookups = 0;

  /** Whether the hash is held, in memory or spilled. */
  has(h: Uint32Array, o = 0): boolean {
    return this.hot.has(h, o) || this.#spilled(h, o);
  }

  /** Adds the hash; false when it was held already. */
  add(h: Uint32Array, o = 0): boolean {
    return !this.#spilled(h, o) && this.hot.add(h, o);
  }

  #spilled(h: Uint32Array, o: number): boolean {
    if (this.#cool && ++this.#coolLookups > REWARM_AFTER) this.rewarm();
    for (const run of this.runs) if (run.has(h, o)) return true;
    return false;
  }

  get cool(): boolean {
    return this.#cool;
  }

  /** The runs' filters leave memory (the hour is idle). */
  coolDown(): void {
    for (const run of this.runs) run.coolDown();
    this.#cool = true;
    this.#coolLookups = 0;
  }

  /** The runs' filters come back into memory (the hour is in use again). */
  rewarm(): void {
    for (const run of this.runs) run.rewarm();
    this.#cool = false;
  }

  get size(): number {
    let n = this.hot.size;
    for (const run of this.runs) n += run.size;
    return n;
  }

  /** Moves the hashes in memory to a new run; past MAX_RUNS, every run merges into that one. */
  spill(folder: SpillFolder): void {
    const merging = this.runs.length >= MAX_RUNS;
    const run = new SpilledRun(this.hot.table(), folder.file(), merging ? this.runs : []);
    if (merging) this.close();
    // An idle hour's hashes spill too (the largest set goes first): its new run is as cool as the others.
    if (this.#cool) run.coolDown();
    this.runs.push(run);
    this.hot = new HashSet128();
  }

  /** Deletes the spilled runs' files. */
  close(): void {
    for (const run of this.runs) run.close();
    this.runs = [];
  }
}

/**
 * The index of one partition, for one claim (its fencing token). `synced` is false once a batch may have
 * landed in Redis without the index knowing (a failed or lost reply): it is caught up from the logs first.
 */
export class PartitionDedupe {
  readonly token: string;
  synced = false;
  /** Set when a spill failed (a full disk): the index then keeps every id in memory rather than stall. */
  spillFailure: Error | undefined;
  readonly #hours = new Map<number, HourIds>();
  readonly #spill: SpillPolicy | undefined;
  #closed = false;
  #batches = 0;

  /** Without a spill policy, every hash stays in memory. */
  constructor(token: string, spill?: SpillPolicy) {
    this.token = token;
    this.#spill = spill;
  }

  hour(hourMs: number): HourIds {
    let h = this.#hours.get(hourMs);
    if (!h) {
      h = new HourIds();
      this.#hours.set(hourMs, h);
    }
    return h;
  }

  hours(): IterableIterator<[number, HourIds]> {
    return this.#hours.entries();
  }

  /** Loads log entries (packed hashes) read from an hour's log, the first of them at entry `from`. */
  load(hourMs: number, from: number, entries: readonly Buffer[], writtenAtMs: number): void {
    const h = this.hour(hourMs);
    if (from === 0 && h.logEntries !== 0) {
      // The log expired and began again: what the hour held is gone from Redis.
      h.close();
      h.hot = new HashSet128();
    }
    const words = new Uint32Array(4);
    for (const bytes of entries) {
      const n = Math.floor(bytes.length / ID_HASH_BYTES);
      for (let i = 0; i < n; i++) {
        const at = i * ID_HASH_BYTES;
        words[0] = bytes.readUInt32LE(at);
        words[1] = bytes.readUInt32LE(at + 4);
        words[2] = bytes.readUInt32LE(at + 8);
        words[3] = bytes.readUInt32LE(at + 12);
        h.add(words);
      }
      this.settle();
    }
    h.logEntries = from + entries.length;
    if (writtenAtMs > h.writtenAtMs) h.writtenAtMs = writtenAtMs;
  }

  /**
   * An hour's log is loaded: it starts idle, so a claim does not hold every hour's filters of the horizon in
   * memory at once. The hours in use take theirs back after their first lookups.
   */
  loaded(hourMs: number): void {
    const h = this.#hours.get(hourMs);
    if (h?.runs.length && !h.cool) h.coolDown();
  }

  /** A batch landed, writing these hours at `nowMs`. */
  landed(hours: Iterable<HourIds>, nowMs: number): void {
    this.#batches += 1;
    for (const h of hours) {
      h.writtenAtMs = nowMs;
      h.lastBatch = this.#batches;
    }
    // Hours the last batches did not write are idle: their filters leave memory.
    for (const h of this.#hours.values()) {
      if (!h.cool && h.runs.length && this.#batches - h.lastBatch >= IDLE_BATCHES) h.coolDown();
    }
  }

  /**
   * Spills the largest hours in memory until the partition is within its budget. Only between batches:
   * a batch's hashes stay in memory until its outcome is known (a failed batch takes them out again).
   */
  settle(): void {
    const spill = this.#spill;
    // A closed index (its partition claimed anew while its last batch was in flight) writes no more files.
    if (!spill || this.spillFailure || this.#closed) return;
    let hot = 0;
    for (const h of this.#hours.values()) hot += h.hot.size;
    while (hot > spill.budget) {
      let largest: HourIds | undefined;
      for (const h of this.#hours.values()) if (!largest || h.hot.size > largest.hot.size) largest = h;
      if (!largest || largest.hot.size < MIN_SPILL) return;
      hot -= largest.hot.size;
      try {
        largest.spill(spill.folder);
      } catch (error) {
        // The batch already landed: its ids must stay known. Memory is the only place left for them.
        this.spillFailure = error as Error;
        return;
      }
    }
  }

  /** Forgets an hour (its log expired in Redis). */
  drop(hourMs: number): void {
    this.#hours.get(hourMs)?.close();
    this.#hours.delete(hourMs);
  }

  /** Forgets hours not written for `ttlMs`, as Redis expires their logs. */
  expire(nowMs: number, ttlMs: number): void {
    for (const [hourMs, h] of this.#hours) if (h.writtenAtMs + ttlMs < nowMs) this.drop(hourMs);
  }

  /** Deletes every spilled file: the index is no longer used. */
  close(): void {
    this.#closed = true;
    for (const h of this.#hours.values()) h.close();
    this.#hours.clear();
  }

  /** Ids held, over all hours. */
  get size(): number {
    let n = 0;
    for (const h of this.#hours.values()) n += h.size;
    return n;
  }

  /** Bytes of the spilled runs' filters and sparse indexes in memory. */
  get spilledMemoryBytes(): number {
    let n = 0;
    for (const h of this.#hours.values()) for (const run of h.runs) n += run.memoryBytes;
    return n;
  }

  /** Ids held in memory (the rest are spilled). */
  get hotSize(): number {
    let n = 0;
    for (const h of this.#hours.values()) n += h.hot.size;
    return n;
  }
}
