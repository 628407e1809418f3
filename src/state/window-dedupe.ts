/**
 * Dedupe of event ids for the window store: one in-memory index per partition (dedupe-index.ts), kept
 * equal to the partition's dedupe logs in Redis. The index is rebuilt from the logs on every claim, the
 * way Kafka Streams restores a store from its changelog, and caught up from them whenever a batch may
 * have landed without the task knowing (an error or a lost reply). The batch script's checkpoint check
 * then proves that nothing landed between that read and the batch: only the owner of the fence writes them.
 */

import { endianness } from 'node:os';
import { MeterlineError } from '../errors.ts';
import { scriptError } from '../metering/script-codes.ts';
import { metrics } from '../observability/metrics.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys, PartitionRef } from '../redis/keys.ts';
import type { BatchAggregate, BatchGroup } from '../redis/scripts.ts';
import * as scripts from '../redis/scripts.ts';
import { HOUR_MS, hourStart } from '../time/hours.ts';
import { type HourIds, PartitionDedupe, type SpillPolicy } from './dedupe-index.ts';
import { hashId, ID_HASH_BYTES } from './id-hash.ts';
import { SpillFolder } from './spilled-ids.ts';
import { CHANGELOG_HOUR_RETENTION_MS } from './window-changelog.ts';
import type { DedupeMemory, HourGroup } from './window-types.ts';

/** Log entries (one per batch, ≤ 16 bytes per event of it) per LRANGE while restoring: no huge reply. */
const READ_CHUNK_ENTRIES = 32;

/** Ids of a pre-v2 dedupe set moved into its log per script call. */
const IMPORT_CHUNK_IDS = 2_000;

/** A batch packed for the script, with what to do once its outcome is known. */
export interface PackedBatch {
  groups: BatchGroup[];
  duplicates: number;
  /** The batch landed: the index keeps its ids. */
  landed(): void;
  /** It did not, or whether it did is unknown: its ids leave the index, which is caught up before the next. */
  failed(): void;
}

export const DEFAULT_DEDUPE_MEMORY_IDS = 1_000_000;

// The stored hashes are little-endian words; pack() writes them through a Uint32Array in the host's order.
if (endianness() !== 'LE') throw new Error('meterline needs a little-endian host');

export class WindowDedupe {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  readonly #ttlMs: number;
  readonly #partitions = new Map<string, PartitionDedupe>();
  readonly #spill: SpillPolicy;
  readonly #folder: SpillFolder;

  constructor(redis: ScriptedRedis, keys: Keys, ttlMs: number, memory: DedupeMemory) {
    this.#redis = redis;
    this.#keys = keys;
    // As Redis keeps the logs: whole seconds.
    this.#ttlMs = Math.ceil(ttlMs / 1000) * 1000;
    const partitions = this.#partitions;
    this.#folder = new SpillFolder(memory.spillDir);
    this.#folder.sweep();
    // Each partition gets an equal share of the budget, as partitions come and go.
    this.#spill = {
      folder: this.#folder,
      get budget() {
        return Math.floor(memory.hotIds / Math.max(1, partitions.size));
      },
    };
  }

  /** A new claim: the next batch restores the index from Redis. */
  forget(p: PartitionRef): void {
    const id = `${p.topic}/${p.partition}`;
    this.#partitions.get(id)?.close();
    this.#partitions.delete(id);
  }

  /** Ids held in memory and on disk, over every partition. */
  #report(): void {
    let hot = 0;
    let all = 0;
    let filters = 0;
    for (const index of this.#partitions.values()) {
      hot += index.hotSize;
      all += index.size;
      filters += index.spilledMemoryBytes;
    }
    metrics.dedupeIds.set({ where: 'memory' }, hot);
    metrics.dedupeIds.set({ where: 'disk' }, all - hot);
    metrics.dedupeFilterBytes.set(filters);
  }

  /** Drops every index and its spilled files. */
  close(): void {
    for (const index of this.#partitions.values()) index.close();
    this.#partitions.clear();
    this.#folder.close();
  }

  /**
   * The task holding `token` closed: its index goes. A task closing after a newer claim of the same
   * partition (reassigned to this process) leaves the newer task's index alone.
   */
  release(p: PartitionRef, token: string): void {
    const id = `${p.topic}/${p.partition}`;
    const index = this.#partitions.get(id);
    if (index?.token !== token) return;
    index.close();
    this.#partitions.delete(id);
  }

  /** Whether an index of the partition is held. */
  holds(p: PartitionRef): boolean {
    return this.#partitions.has(`${p.topic}/${p.partition}`);
  }

  /** The partition's index for `token`, restored or caught up from Redis when needed. */
  async ready(p: PartitionRef, token: string, nowMs: number): Promise<PartitionDedupe> {
    const id = `${p.topic}/${p.partition}`;
    let index = this.#partitions.get(id);
    if (!index || index.token !== token) {
      // A claim: ids a processor before v2 kept in sets move into the logs first, then the index loads.
      await this.importSeenSets(p, token, nowMs);
      index?.close();
      index = new PartitionDedupe(token, this.#spill);
      this.#partitions.set(id, index);
    }
    if (!index.synced) {
      const failed = index.spillFailure;
      await this.catchUp(p, index);
      index.synced = true;
      if (!failed && index.spillFailure) metrics.dedupeSpillFailures.inc();
      this.#report();
    }
    return index;
  }

  /**
   * An upgrade from before the packed logs: the ids of each hour's dedupe set (`seen(hour)`, id strings)
   * move into that hour's log (importSeenIds.lua, a chunk at a time), so an event counted before the
   * upgrade is still refused after it. The hours looked at are all an unexpired set can belong to (the
   * dedupe ttl, plus the changelog's week of hours an event can still reach): one pipeline of SCARDs per
   * claim. Every claim looks, with no marker to skip it: during a rolling upgrade a processor of the
   * previous version may own the partition again between two claims and write sets.
   */
  async importSeenSets(p: PartitionRef, token: string, nowMs: number): Promise<number> {
    const k = this.#keys.partition(p);
    const newest = hourStart(nowMs) + HOUR_MS;
    const hours: number[] = [];
    for (let h = hourStart(nowMs - this.#ttlMs - CHANGELOG_HOUR_RETENTION_MS); h <= newest; h += HOUR_MS)
      hours.push(h);
    const sizes = await this.#exec(hours.reduce((pl, h) => pl.scard(k.seen(h)), this.#redis.pipeline()));
    let moved = 0;
    const words = new Uint32Array(4);
    for (const [i, hourMs] of hours.entries()) {
      if (!Number(sizes[i])) continue;
      let cursor = '0';
      do {
        const [next, ids] = await this.#redis.sscan(k.seen(hourMs), cursor, 'COUNT', IMPORT_CHUNK_IDS);
        cursor = next;
        if (!ids.length) continue;
        const hashes = Buffer.allocUnsafe(ids.length * ID_HASH_BYTES);
        ids.forEach((id, n) => {
          hashId(id, words);
          for (let w = 0; w < 4; w++) hashes.writeUInt32LE(words[w] as number, n * ID_HASH_BYTES + w * 4);
        });
        const res = await scripts.importSeenIds(this.#redis, k, {
          token,
          hourMs,
          hashes,
          nowMs,
          dedupeTtlMs: this.#ttlMs,
          ids,
        });
        const failure = scriptError(res, p);
        if (failure) throw failure;
        moved += res;
      } while (cursor !== '0');
    }
    // Moving ids while a set is scanned only removes members: SSCAN still returns every one left.
    return moved;
  }

  /**
   * Reads what the index lacks of the partition's logs: the hours listed, each from the entry the index
   * holds (from the first when the log is shorter: it expired and began again). Hours Redis no longer
   * lists leave the index. Three round trips, whatever the size.
   */
  async catchUp(p: PartitionRef, index: PartitionDedupe): Promise<void> {
    const k = this.#keys.partition(p);
    const listed = await this.#redis.zrange(k.dedupeHours(), '0', '-1', 'WITHSCORES');
    const hours = new Map<number, number>();
    for (let i = 0; i < listed.length; i += 2) hours.set(Number(listed[i]), Number(listed[i + 1]));
    for (const [hourMs] of [...index.hours()]) if (!hours.has(hourMs)) index.drop(hourMs);
    if (!hours.size) return;
    const lengths = await this.#exec(
      [...hours.keys()].reduce((pl, h) => pl.llen(k.dedupeLog(h)), this.#redis.pipeline()),
    );
    const reads: { hourMs: number; from: number; to: number }[] = [];
    const pipeline = this.#redis.pipeline();
    [...hours.keys()].forEach((hourMs, i) => {
      const length = Number(lengths[i]);
      if (length === 0) {
        index.drop(hourMs);
        return;
      }
      const held = index.hour(hourMs).logEntries;
      for (let at = length < held ? 0 : held; at < length; at += READ_CHUNK_ENTRIES) {
        const to = Math.min(at + READ_CHUNK_ENTRIES, length) - 1;
        pipeline.lrangeBuffer(k.dedupeLog(hourMs), at, to);
        reads.push({ hourMs, from: at, to });
      }
    });
    if (!reads.length) return;
    const chunks = await this.#exec(pipeline);
    reads.forEach(({ hourMs, from, to }, i) => {
      const entries = chunks[i] as Buffer[];
      // Read in the same order as written, each slice right after the previous one.
      if (entries.length !== to - from + 1) {
        throw new MeterlineError('redis_error', 'a dedupe log changed while it was read', {
          retriable: true,
        });
      }
      index.load(hourMs, from, entries, hours.get(hourMs) ?? 0);
      // An hour's reads are consecutive: its last one completes it.
      if (reads[i + 1]?.hourMs !== hourMs) index.loaded(hourMs);
    });
  }

  async #exec(pipeline: ReturnType<ScriptedRedis['pipeline']>): Promise<unknown[]> {
    const res = (await pipeline.exec()) ?? [];
    const failed = res.find(([e]) => e);
    if (failed) {
      throw new MeterlineError('redis_error', 'reading the dedupe logs failed', {
        retriable: true,
        cause: failed[0],
      });
    }
    return res.map(([, v]) => v);
  }

  /**
   * Splits a batch's events into new ones (their ids enter the index now, tentatively) and duplicates
   * (known to the index, or earlier in this batch), and packs the new ones for the script.
   */
  pack(index: PartitionDedupe, groups: readonly HourGroup[], nowMs: number): PackedBatch {
    const packed: BatchGroup[] = [];
    let duplicates = 0;
    for (const g of groups) {
      const hour = index.hour(g.hourMs);
      let total = 0;
      for (const agg of g.aggregates) total += agg.micros.length;
      // Hashed straight into the script's argument: 32-bit words in the host's order, little-endian below.
      const words = new Uint32Array(total * 4);
      const hashes = Buffer.from(words.buffer, 0, words.byteLength);
      let n = 0;
      const late = g.targetMs !== undefined && g.targetMs !== g.hourMs;
      const aggregates: BatchAggregate[] = [];
      for (const agg of g.aggregates) {
        let events = 0;
        let sum = 0;
        let peak = -1;
        const ids: string[] = [];
        const hashed = agg.hashed;
        for (let e = 0; e < agg.micros.length; e++) {
          if (hashed) {
            const from = 4 * (hashed.at[e] as number);
            const to = n * 4;
            words[to] = hashed.words[from] as number;
            words[to + 1] = hashed.words[from + 1] as number;
            words[to + 2] = hashed.words[from + 2] as number;
            words[to + 3] = hashed.words[from + 3] as number;
          } else hashId(agg.ids[e] as string, words, n * 4);
          if (!hour.add(words, n * 4)) {
            duplicates += 1;
            continue;
          }
          n += 1;
          events += 1;
          const micros = agg.micros[e] as number;
          sum += micros;
          if (micros > peak) peak = micros;
          if (late) ids.push(agg.ids[e] as string);
        }
        if (events)
          aggregates.push({ field: agg.field, op: agg.op, events, value: agg.op === 'm' ? peak : sum, ids });
      }
      packed.push({
        hourMs: g.hourMs,
        targetMs: g.targetMs,
        hashes: hashes.subarray(0, n * ID_HASH_BYTES),
        aggregates,
      });
    }
    return {
      groups: packed,
      duplicates,
      landed: () => {
        const written: HourIds[] = [];
        for (const g of packed) {
          const h = index.hour(g.hourMs);
          if (g.hashes.length) h.logEntries += 1;
          written.push(h);
        }
        index.landed(written, nowMs);
        index.expire(nowMs, this.#ttlMs);
        const failed = index.spillFailure;
        index.settle();
        if (!failed && index.spillFailure) metrics.dedupeSpillFailures.inc();
        this.#report();
      },
      failed: () => {
        for (const g of packed) {
          // A batch's hashes are all in memory: nothing spills before its outcome is known.
          const set = index.hour(g.hourMs).hot;
          const words = new Uint32Array(g.hashes.buffer, g.hashes.byteOffset, g.hashes.length / 4);
          for (let at = 0; at < words.length; at += 4) set.delete(words, at);
        }
        index.synced = false;
      },
    };
  }
}
