/**
 * Spilled id hashes: a run on local disk answers exactly like the set it was written from (its filter may
 * let a stranger through to the disk, never keep a member out), and a partition's index over its budget
 * spills, stays exact, and deletes its files when done with them.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartitionDedupe } from '../../../src/state/dedupe-index.ts';
import { HashSet128 } from '../../../src/state/hash-set-128.ts';
import { hashId, ID_HASH_BYTES } from '../../../src/state/id-hash.ts';
import { SpilledRun, SpillFolder } from '../../../src/state/spilled-ids.ts';

const hashOf = (id: string) => {
  const out = new Uint32Array(4);
  hashId(id, out);
  return out;
};

let root: string;
beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'spill-test-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const filesUnder = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [e.name],
  );

describe('SpilledRun', () => {
  it('merges runs with new hashes into one sorted run that holds them all', () => {
    const setOf = (from: number, to: number) => {
      const set = new HashSet128();
      for (let i = from; i < to; i++) set.add(hashOf(`id-${i}`));
      return set;
    };
    // Runs of different sizes (one under a block, one over many), then the hashes still in memory.
    const runs = [
      new SpilledRun(setOf(0, 100).table(), path.join(root, '1.ids')),
      new SpilledRun(setOf(100, 30_000).table(), path.join(root, '2.ids')),
      new SpilledRun(setOf(30_000, 31_000).table(), path.join(root, '3.ids')),
    ];
    const merged = new SpilledRun(setOf(31_000, 40_000).table(), path.join(root, 'm.ids'), runs);
    for (const run of runs) run.close();
    expect(merged.size).toBe(40_000);
    let missing = 0;
    for (let i = 0; i < 40_000; i++) if (!merged.has(hashOf(`id-${i}`))) missing += 1;
    let strangers = 0;
    for (let i = 0; i < 100_000; i++) if (merged.has(hashOf(`other-${i}`))) strangers += 1;
    expect(missing).toBe(0);
    expect(strangers).toBe(0);
    // The file: every hash once, sorted by first word (what a lookup's block search relies on), then the
    // filter (16 bits per hash).
    const bytes = readFileSync(merged.path);
    expect(bytes.length).toBe(40_000 * ID_HASH_BYTES + 40_000 * 2);
    let unsorted = 0;
    for (let i = 1; i < 40_000; i++) {
      if (bytes.readUInt32LE(i * ID_HASH_BYTES) < bytes.readUInt32LE((i - 1) * ID_HASH_BYTES)) unsorted += 1;
    }
    expect(unsorted).toBe(0);
    merged.close();
  });

  it('finds every hash it was written from and none other', () => {
    const set = new HashSet128();
    for (let i = 0; i < 50_000; i++) set.add(hashOf(`in-${i}`));
    const run = new SpilledRun(set.table(), path.join(root, 'a.ids'));
    expect(run.size).toBe(50_000);
    let missing = 0;
    for (let i = 0; i < 50_000; i++) if (!run.has(hashOf(`in-${i}`))) missing += 1;
    let strangers = 0;
    for (let i = 0; i < 200_000; i++) if (run.has(hashOf(`out-${i}`))) strangers += 1;
    expect(missing).toBe(0);
    expect(strangers).toBe(0);
    // 16 bits of filter per hash and a word per 256 hashes: about 2 bytes per spilled id in memory.
    expect(run.memoryBytes / run.size).toBeLessThan(2.1);
    // Cooled, only the sparse index stays in memory, and every lookup still answers exactly from the disk.
    run.coolDown();
    expect(run.cool).toBe(true);
    const before = run.reads;
    expect(run.memoryBytes / run.size).toBeLessThan(0.02);
    for (let i = 0; i < 50_000; i++) if (!run.has(hashOf(`in-${i}`))) missing += 1;
    for (let i = 0; i < 20_000; i++) if (run.has(hashOf(`out-${i}`))) strangers += 1;
    expect(missing).toBe(0);
    expect(strangers).toBe(0);
    expect(run.reads - before).toBeGreaterThanOrEqual(70_000);
    // Warm again, its filter read back from the file keeps strangers off the disk as before.
    run.rewarm();
    expect(run.memoryBytes / run.size).toBeLessThan(2.1);
    const reads = run.reads;
    for (let i = 0; i < 200_000; i++) if (run.has(hashOf(`out-${i}`))) strangers += 1;
    expect(strangers).toBe(0);
    expect(run.reads - reads).toBeLessThan(200_000 * 0.005);
    for (let i = 0; i < 50_000; i++) if (!run.has(hashOf(`in-${i}`))) missing += 1;
    expect(missing).toBe(0);
    run.close();
    expect(readdirSync(root)).toEqual([]);
  });

  it('finds hashes that share their first word across a block boundary, and a first word of 0', () => {
    const n = 1_000;
    const words = new Uint32Array(n * 4);
    for (let i = 0; i < n; i++) {
      // 600 hashes share one first word: they span three 256-hash blocks.
      words.set([i < 600 ? 0x80000000 : i * 4_000_000, i, i * 7, i * 13], i * 4);
    }
    // A hash whose first word is 0 is kept as 1, the way the table keeps it; asking with 0 finds it.
    words.set([1, 0xdead, 0xbeef, 0xf00d], 999 * 4);
    const run = new SpilledRun(words, path.join(root, 'b.ids'));
    let missing = 0;
    for (let i = 0; i < n - 1; i++) if (!run.has(words, i * 4)) missing += 1;
    expect(missing).toBe(0);
    expect(run.has(new Uint32Array([0, 0xdead, 0xbeef, 0xf00d]))).toBe(true);
    expect(run.has(new Uint32Array([0x80000000, 600, 600 * 7, 1]))).toBe(false);
    run.close();
  });
});

describe('SpillFolder', () => {
  it('sweeps the folders of processes that are gone before it spills anything, and keeps those of live ones', () => {
    const orphan = path.join(root, 'meterline-dedupe-4194304-abc');
    const mine = path.join(root, `meterline-dedupe-${process.ppid}-def`);
    mkdirSync(orphan);
    mkdirSync(mine);
    new SpillFolder(root).sweep();
    expect(readdirSync(root)).toEqual([path.basename(mine)]);
    // A folder not made yet is nothing to sweep.
    new SpillFolder(path.join(root, 'not-yet')).sweep();
  });

  it('removes the folders of processes that are gone, and its own when closed', () => {
    // No process has pid 2^22 (Linux's pid_max limit): its folder is an orphan.
    const orphan = path.join(root, 'meterline-dedupe-4194304-abc');
    mkdirSync(orphan);
    const folder = new SpillFolder(root);
    const file = folder.file();
    expect(readdirSync(root)).toEqual([path.basename(path.dirname(file))]);
    folder.close();
    expect(readdirSync(root)).toEqual([]);
  });
});

describe('PartitionDedupe with a memory budget', () => {
  const pack = (ids: string[]) => {
    const packed = Buffer.alloc(ids.length * ID_HASH_BYTES);
    ids.forEach((id, i) => {
      const h = hashOf(id);
      for (let w = 0; w < 4; w++) packed.writeUInt32LE(h[w] as number, i * ID_HASH_BYTES + w * 4);
    });
    return packed;
  };

  it('keeps at most its budget in memory, spills the rest, and still knows every id exactly', () => {
    const folder = new SpillFolder(root);
    const index = new PartitionDedupe('1', { folder, budget: 10_000 });
    // Two hours, 60,000 ids each, loaded 5,000 at a time as a restore reads log entries.
    for (const hourMs of [1_000, 2_000]) {
      for (let from = 0; from < 12; from++) {
        const ids = Array.from({ length: 5_000 }, (_, i) => `h${hourMs}-${from * 5_000 + i}`);
        index.load(hourMs, from, [pack(ids)], 5);
        expect(index.hotSize).toBeLessThanOrEqual(10_000);
      }
      index.loaded(hourMs);
    }
    expect(index.size).toBe(120_000);
    const [one, two] = [index.hour(1_000), index.hour(2_000)];
    // Restored hours start idle: their filters are on disk only, whatever the horizon holds.
    expect(one.cool && two.cool).toBe(true);
    expect(index.spilledMemoryBytes).toBeLessThan((120_000 - index.hotSize) * 0.02);
    // Spilled runs merge past four per hour, so a new id checks a few filters at most.
    expect(one.runs.length).toBeGreaterThan(0);
    expect(one.runs.length).toBeLessThanOrEqual(4);
    let wrong = 0;
    for (let i = 0; i < 60_000; i++) {
      if (!one.has(hashOf(`h1000-${i}`)) || !two.has(hashOf(`h2000-${i}`))) wrong += 1;
      // Dedupe is per event hour.
      if (one.has(hashOf(`h2000-${i}`))) wrong += 1;
    }
    expect(wrong).toBe(0);
    // A spilled id is refused as a duplicate; a new one is taken.
    expect(one.add(hashOf('h1000-7'))).toBe(false);
    expect(one.add(hashOf('h1000-new'))).toBe(true);
    expect(filesUnder(root).length).toBe(one.runs.length + two.runs.length);
    index.drop(1_000);
    expect(filesUnder(root).length).toBe(two.runs.length);
    index.close();
    expect(filesUnder(root)).toEqual([]);
    // A batch that lands after its index was closed (a new claim meanwhile) leaves no file behind.
    for (let i = 0; i < 20_000; i++) index.hour(3_000).add(hashOf(`late-${i}`));
    index.settle();
    expect(filesUnder(root)).toEqual([]);
    folder.close();
  });

  it('keeps the filters of hours being written in memory, and only on disk for idle hours, still exact', () => {
    const folder = new SpillFolder(root);
    const index = new PartitionDedupe('1', { folder, budget: 10_000 });
    const [one, two] = [index.hour(1_000), index.hour(2_000)];
    // Batches of 5,000 new ids, the first 8 into hour one, the next 8 into hour two (events in time order).
    let batch = 0;
    const write = (hour: typeof one, prefix: string) => {
      for (let i = 0; i < 5_000; i++) hour.add(hashOf(`${prefix}-${batch * 5_000 + i}`));
      index.landed([hour], batch);
      index.settle();
      batch += 1;
    };
    for (let b = 0; b < 8; b++) write(one, 'a');
    const oneWarm = index.spilledMemoryBytes;
    // Hour one's runs hold about 2 bytes per spilled id while it is written.
    expect(one.runs.length).toBeGreaterThan(0);
    expect(oneWarm).toBeGreaterThan(one.runs.reduce((n, r) => n + r.size, 0) * 1.9);
    write(two, 'b');
    // One batch without it: still warm (a batch may miss an hour its neighbours still write).
    expect(one.cool).toBe(false);
    for (let b = 0; b < 7; b++) write(two, 'b');
    expect(one.cool).toBe(true);
    expect(two.cool).toBe(false);
    // Hour one's filters left memory: what stays of it is its block index, a word per 256 ids.
    const oneSpilled = one.runs.reduce((n, r) => n + r.size, 0);
    const oneCold = one.runs.reduce((n, r) => n + r.memoryBytes, 0);
    expect(oneCold).toBeLessThan(oneSpilled * 0.02);
    // Its ids are still known exactly: a late duplicate is refused, a late new id taken.
    let wrong = 0;
    for (let i = 0; i < 40_000; i++) if (!one.has(hashOf(`a-${i}`))) wrong += 1;
    expect(wrong).toBe(0);
    // Looked up that often, it is in use again: its filters came back, and it counts as written once a batch lands.
    expect(one.cool).toBe(false);
    expect(one.add(hashOf('a-7'))).toBe(false);
    expect(one.add(hashOf('a-late'))).toBe(true);
    expect(one.runs.reduce((n, r) => n + r.memoryBytes, 0)).toBeGreaterThan(oneSpilled * 1.9);
    index.close();
    folder.close();
  });

  it('keeps a batch in memory until it settles: its ids can still be taken back', () => {
    const folder = new SpillFolder(root);
    const index = new PartitionDedupe('1', { folder, budget: 10_000 });
    const hour = index.hour(1_000);
    for (let i = 0; i < 20_000; i++) hour.add(hashOf(`b-${i}`));
    expect(index.hotSize).toBe(20_000);
    // A failed batch takes its ids out of the memory set before anything spills.
    for (let i = 10_000; i < 20_000; i++) expect(hour.hot.delete(hashOf(`b-${i}`))).toBe(true);
    index.settle();
    hour.add(hashOf('b-0-again'));
    for (let i = 0; i < 10_000; i++) hour.add(hashOf(`c-${i}`));
    index.settle();
    expect(index.hotSize).toBeLessThanOrEqual(10_000);
    expect(hour.has(hashOf('b-5'))).toBe(true);
    expect(hour.has(hashOf('b-15000'))).toBe(false);
    index.close();
    folder.close();
  });

  it('keeps its ids in memory when it cannot spill (a full or unwritable disk), and says so', () => {
    // A folder below a file cannot be made: every spill fails.
    const folder = new SpillFolder(path.join(root, 'a-file', 'spill'));
    writeFileSync(path.join(root, 'a-file'), '');
    const index = new PartitionDedupe('1', { folder, budget: 10_000 });
    const ids = Array.from({ length: 30_000 }, (_, i) => `f-${i}`);
    index.load(1_000, 0, [pack(ids)], 5);
    expect(index.spillFailure).toBeInstanceOf(Error);
    expect(index.hotSize).toBe(30_000);
    const hour = index.hour(1_000);
    expect(ids.filter((id) => !hour.has(hashOf(id)))).toEqual([]);
    expect(hour.add(hashOf('f-1'))).toBe(false);
    index.close();
  });
});
