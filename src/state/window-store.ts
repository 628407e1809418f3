/**
 * The hourly window state store in Redis. The only code that calls the window Lua scripts; it builds their
 * KEYS and ARGV from the key builder and maps their failure codes to typed errors.
 */
import os from 'node:os';
import { MeterlineError } from '../errors.ts';
import { SCRIPT_CODE, scriptError } from '../metering/script-codes.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { baseField, type Keys, type PartitionRef } from '../redis/keys.ts';
import * as scripts from '../redis/scripts.ts';
import { parseFrozenHash, readCutsThrough, readFrozenThrough } from './frozen-hours.ts';
import { HeldRecords } from './held-records.ts';
import { TraceLinks } from './trace-links.ts';
import { DEFAULT_DEDUPE_MEMORY_IDS, WindowDedupe } from './window-dedupe.ts';
import { REPLAY_MARK_TTL_S, WindowReads } from './window-reads.ts';
import { restorePartition } from './window-restore.ts';
import type {
  ApplyResult,
  CutHour,
  FrozenHour,
  HourGroup,
  HourSnapshot,
  PartitionSnapshot,
  WindowStoreOptions,
} from './window-types.ts';

export class WindowStore extends WindowReads {
  readonly options: Required<WindowStoreOptions>;
  /** Which records of a frozen hour went out, and since when the others are held. */
  readonly held: HeldRecords;
  /** A sample of the trace contexts of each hour's events, for the finalize span's links. */
  readonly traces: TraceLinks;
  /** Which event ids each partition counted: an index in memory, packed logs in Redis. */
  readonly dedupe: WindowDedupe;

  constructor(redis: ScriptedRedis, keys: Keys, options: WindowStoreOptions) {
    super(redis, keys);
    this.options = {
      lateAuditCap: 10_000,
      dedupeMemory: { hotIds: DEFAULT_DEDUPE_MEMORY_IDS, spillDir: os.tmpdir() },
      ...options,
    };
    this.held = new HeldRecords(redis, keys, this.options.finalizedTtlMs);
    this.traces = new TraceLinks(redis, keys, this.options.dedupeTtlMs);
    this.dedupe = new WindowDedupe(redis, keys, this.options.dedupeTtlMs, this.options.dedupeMemory);
  }

  /** Takes ownership of a partition: bumps its fencing token and reads its checkpoint. */
  async claim(p: PartitionRef): Promise<{ token: string; checkpoint: string | undefined }> {
    const k = this.keys.partition(p);
    this.dedupe.forget(p);
    const res = await this.redis.multi().incr(k.fence()).get(k.checkpoint()).exec();
    if (!res) throw new MeterlineError('redis_error', 'claim transaction was discarded', { retriable: true });
    const [[fenceErr, token], [ckptErr, checkpoint]] = res as [
      [Error | null, number],
      [Error | null, string | null],
    ];
    if (fenceErr || ckptErr)
      throw new MeterlineError('redis_error', 'claim failed', {
        retriable: true,
        cause: fenceErr ?? ckptErr,
      });
    return { token: String(token), checkpoint: checkpoint ?? undefined };
  }

  async applyBatch(
    p: PartitionRef,
    token: string,
    batch: {
      /** `after`: the checkpoint the task holds (undefined when none); `last`: the batch's last offset. */
      offsets: { after: string | undefined; last: string };
      groups: HourGroup[];
      maxEventTimeMs: number | undefined;
      nowMs: number;
    },
  ): Promise<ApplyResult> {
    const { offsets } = batch;
    const index = await this.dedupe.ready(p, token, batch.nowMs);
    const packed = this.dedupe.pack(index, batch.groups, batch.nowMs);
    let res: number[];
    try {
      res = await scripts.applyBatch(this.redis, this.keys.partition(p), {
        token,
        after: offsets.after,
        last: offsets.last,
        dedupeTtlSeconds: Math.ceil(this.options.dedupeTtlMs / 1000),
        lateAuditCap: this.options.lateAuditCap,
        maxEventTimeMs: batch.maxEventTimeMs,
        nowMs: batch.nowMs,
        duplicates: packed.duplicates,
        groups: packed.groups,
      });
    } catch (cause) {
      packed.failed();
      // Whether it landed is unknown (a lost reply): the retry learns it from the checkpoint.
      throw new MeterlineError('redis_error', 'applying the batch failed', { retriable: true, cause });
    }
    const failure = scriptError(res, p, { held: offsets.after });
    if (failure) {
      packed.failed();
      throw failure;
    }
    packed.landed();
    return { applied: res[0] ?? 0, duplicates: res[1] ?? 0, carried: res[2] ?? 0, counted: res[3] ?? 0 };
  }

  /**
   * Whether Redis still holds what the task holding `token` committed through `held`: the batch script's
   * checks, without a batch (a quiet partition's state counts too).
   */
  async verify(
    p: PartitionRef,
    token: string,
    held: bigint | undefined,
  ): Promise<'ok' | 'lost' | 'behind' | 'fenced'> {
    const k = this.keys.partition(p);
    const res = await this.redis.multi().get(k.fence()).get(k.checkpoint()).exec();
    if (!res || res.some(([e]) => e))
      throw new MeterlineError('redis_error', 'reading the partition state failed', { retriable: true });
    const fence = res[0]?.[1] as string | null;
    const checkpoint = res[1]?.[1] as string | null;
    if (fence === null) return 'lost';
    if (fence !== token) return BigInt(fence) < BigInt(token) ? 'behind' : 'fenced';
    if (held !== undefined && (checkpoint === null || BigInt(checkpoint) < held)) return 'behind';
    return 'ok';
  }

  /** Hours with open aggregates whose end is at or before `closedBeforeMs`, oldest first. */
  async hoursEndingBy(p: PartitionRef, closedBeforeMs: number): Promise<number[]> {
    const hours = await this.redis.zrangebyscore(
      this.keys.partition(p).openHours(),
      '-inf',
      String(closedBeforeMs - 3_600_000),
    );
    return hours.map(Number);
  }

  async pendingEmits(p: PartitionRef): Promise<number[]> {
    return (await this.redis.zrange(this.keys.partition(p).pendingEmit(), '0', '-1')).map(Number);
  }

  /**
   * What finalizing an hour needs, read at one checkpoint: the hour's aggregates, whether it is frozen
   * already, the fields whose model state owes units, and the model state of `fields` and of those.
   */
  async readHour(p: PartitionRef, hourMs: number, fields: readonly string[]): Promise<HourSnapshot> {
    const k = this.keys.partition(p);
    const res = await this.redis
      .multi()
      .get(k.checkpoint())
      .exists(k.finalized(hourMs))
      .hgetall(k.aggregates(hourMs))
      .smembers(k.due())
      .hgetall(k.cuts(hourMs))
      .exec();
    if (!res || res.some(([e]) => e))
      throw new MeterlineError('redis_error', 'reading the hour failed', { retriable: true });
    const cuts = new Set(Object.keys((res[4]?.[1] as Record<string, string>) ?? {}));
    const checkpoint = res[0]?.[1] as string | null;
    const aggregates = Object.entries(res[2]?.[1] as Record<string, string>).map(
      ([field, micros]) => [field, BigInt(micros)] as [string, bigint],
    );
    const due = res[3]?.[1] as string[];
    const wanted = [...new Set([...fields, ...due, ...aggregates.map(([f]) => baseField(f))])];
    const states = new Map<string, string | null>();
    if (wanted.length) {
      // In chunks: one spread of a whole fleet's fields could exceed JS's argument limit.
      for (let from = 0; from < wanted.length; from += 5_000) {
        const chunk = wanted.slice(from, from + 5_000);
        const values = await this.redis.hmget(k.modelState(), ...chunk);
        chunk.forEach((f, i) => {
          states.set(f, values[i] ?? null);
        });
      }
    }
    return { checkpoint: checkpoint ?? '', finalized: res[1]?.[1] === 1, aggregates, due, states, cuts };
  }

  /**
   * Closes one customer's hour early with the records and model state computed from `readHour`'s
   * snapshot, removing `aggregateFields` (the customer's) from the hour. 'already': the hour is frozen
   * whole, or the customer was cut before.
   */
  async cutHour(
    p: PartitionRef,
    token: string,
    hourMs: number,
    customer: string,
    snapshotCheckpoint: string,
    aggregateFields: readonly string[],
    records: readonly [field: string, frozen: string][],
    states: readonly [field: string, encoded: string, owesNextHour: boolean][],
  ): Promise<'cut' | 'already' | 'moved'> {
    const res = await scripts.cutCustomer(this.redis, this.keys.partition(p), {
      token,
      checkpoint: snapshotCheckpoint,
      hourMs,
      customer,
      aggregateFields,
      records,
      states,
    });
    const failure = scriptError(res, p);
    if (failure) throw failure;
    if (res[0] === SCRIPT_CODE.moved) return 'moved';
    return res[0] === 1 ? 'cut' : 'already';
  }

  /** A customer's early-closed hour; undefined when gone. */
  async frozenCut(p: PartitionRef, hourMs: number, customer: string): Promise<CutHour | undefined> {
    const all = await this.redis.hgetall(this.keys.partition(p).cut(hourMs, customer));
    return all.__hour === undefined ? undefined : { ...parseFrozenHash(hourMs, all), customer };
  }

  /** Cuts whose records are not on the submission topic yet, oldest first. */
  async pendingCuts(p: PartitionRef): Promise<[hourMs: number, customer: string][]> {
    const members = await this.redis.zrange(this.keys.partition(p).pendingCuts(), '0', '-1');
    return members.map((m) => {
      const i = m.indexOf('|');
      return [Number(m.slice(0, i)), m.slice(i + 1)];
    });
  }

  /** The cut is on the submission topic: it no longer waits, and starts to expire like a frozen hour. */
  async markCutEmitted(p: PartitionRef, token: string, hourMs: number, customer: string): Promise<void> {
    const k = this.keys.partition(p);
    const ttl = Math.ceil(this.options.finalizedTtlMs / 1000);
    const res = await scripts.markEmitted(this.redis, k, {
      token,
      pending: k.pendingCuts(),
      frozen: k.cut(hourMs, customer),
      member: `${hourMs}|${customer}`,
      ttlSeconds: ttl,
    });
    const failure = scriptError(res, p);
    if (failure) throw failure;
    // The hour's cut index outlives the hour's frozen records, which it tells apart from the cut's.
    await this.redis.expire(k.cuts(hourMs), ttl + 3_600);
  }

  /** Customers cut early in the hours from `fromMs` to `toMs`, each with the checkpoint of its cut. */
  cutsThrough(p: PartitionRef, fromMs: number, toMs: number): Promise<Map<number, Map<string, bigint>>> {
    return readCutsThrough(this.redis, this.keys.partition(p), fromMs, toMs);
  }

  /**
   * Freezes an hour with the records and model state computed from `readHour`'s snapshot, in one
   * script. 'moved' means the partition's checkpoint changed since the snapshot: read again.
   */
  async freezeHour(
    p: PartitionRef,
    token: string,
    hourMs: number,
    snapshotCheckpoint: string,
    records: readonly [field: string, frozen: string][],
    states: readonly [field: string, encoded: string, owesNextHour: boolean][],
  ): Promise<'frozen' | 'already' | 'moved'> {
    const res = await scripts.finalizeHour(this.redis, this.keys.partition(p), {
      token,
      checkpoint: snapshotCheckpoint,
      hourMs,
      records,
      states,
    });
    const failure = scriptError(res, p);
    if (failure) throw failure;
    if (res[0] === SCRIPT_CODE.moved) return 'moved';
    return res[0] === 1 ? 'frozen' : 'already';
  }

  /** The frozen records of a finalized hour, field → stored record. */
  async frozenRecords(p: PartitionRef, hourMs: number): Promise<[field: string, frozen: string][]> {
    return (await this.frozenHour(p, hourMs))?.records ?? [];
  }

  /** A finalized hour with what it was frozen through and the model state it left; undefined when gone. */
  async frozenHour(p: PartitionRef, hourMs: number): Promise<FrozenHour | undefined> {
    const all = await this.redis.hgetall(this.keys.partition(p).finalized(hourMs));
    return all.__hour === undefined ? undefined : parseFrozenHash(hourMs, all);
  }

  /**
   * The hours from `fromMs` to `toMs` frozen on the partition, each with the checkpoint it was frozen
   * at (-1 when not recorded: an hour frozen by an older version).
   */
  frozenThrough(p: PartitionRef, fromMs: number, toMs: number): Promise<Map<number, bigint>> {
    return readFrozenThrough(this.redis, this.keys.partition(p), fromMs, toMs);
  }

  /**
   * Brings a partition's Redis state up to its changelog, before any batch applies (see
   * `restorePartition`). Returns how many hours were restored.
   */
  async restore(p: PartitionRef, snapshot: PartitionSnapshot): Promise<number> {
    const known = await this.closedThrough(p);
    // Cuts Redis holds already (they come after any hour it still has closed, or Redis lost everything).
    const held = await this.cutsThrough(
      p,
      snapshot.cuts[0]?.hourMs ?? 0,
      snapshot.cuts[snapshot.cuts.length - 1]?.hourMs ?? -1,
    );
    return restorePartition(this.redis, this.keys.partition(p), this.options.finalizedTtlMs, snapshot, {
      closedThrough: known,
      cuts: held,
    });
  }

  /**
   * The first hour of hourly zero records for subscribers without a subscription time: set once, to the
   * hour the pipeline first ran, so every partition starts at the same hour.
   */
  async zeroRecordsFrom(topic: string, candidateHourMs: number): Promise<number> {
    const key = this.keys.zeroRecordsFrom(topic);
    await this.redis.set(key, String(candidateHourMs), 'NX');
    return Number(await this.redis.get(key));
  }

  /**
   * Marks a frozen hour emitted (or dead-lettered): it no longer waits, and its frozen records start to
   * expire after the finalized-hour TTL, not before.
   */
  async markEmitted(p: PartitionRef, token: string, hourMs: number): Promise<void> {
    const k = this.keys.partition(p);
    const res = await scripts.markEmitted(this.redis, k, {
      token,
      pending: k.pendingEmit(),
      frozen: k.finalized(hourMs),
      member: hourMs,
      ttlSeconds: Math.ceil(this.options.finalizedTtlMs / 1000),
    });
    const failure = scriptError(res, p);
    if (failure) throw failure;
  }

  /**
   * Keeps a frozen hour that waits for its emit from expiring: hours frozen by an older version carry a
   * TTL from the start. Returns whether its frozen records are still there.
   */
  async keepFrozen(p: PartitionRef, hourMs: number): Promise<boolean> {
    const k = this.keys.partition(p).finalized(hourMs);
    const res = await this.redis.multi().persist(k).exists(k).exec();
    if (!res || res.some(([e]) => e))
      throw new MeterlineError('redis_error', 'keeping the frozen hour failed', { retriable: true });
    return res[1]?.[1] === 1;
  }

  /** Which of these hours are already finalized on the partition. */
  async finalizedAmong(p: PartitionRef, hours: readonly number[]): Promise<Set<number>> {
    if (!hours.length) return new Set();
    const k = this.keys.partition(p);
    const pipeline = this.redis.pipeline();
    for (const h of hours) pipeline.exists(k.finalized(h));
    const res = (await pipeline.exec()) ?? [];
    return new Set(hours.filter((_, i) => res[i]?.[1] === 1));
  }

  /** The end of the replay after a state loss, if one is under way (offsets below it are replays). */
  async replayUntil(p: PartitionRef): Promise<bigint | undefined> {
    const v = await this.redis.get(this.keys.partition(p).replay());
    return v === null ? undefined : BigInt(v);
  }

  async setReplayUntil(p: PartitionRef, offset: bigint): Promise<void> {
    await this.redis.set(this.keys.partition(p).replay(), offset.toString(), 'EX', REPLAY_MARK_TTL_S);
  }

  /** Until the replay reaches this offset (the log end when recovery began), no hour closes. */
  async replayHold(p: PartitionRef): Promise<bigint | undefined> {
    const v = await this.redis.get(this.keys.partition(p).replayHold());
    return v === null ? undefined : BigInt(v);
  }

  async setReplayHold(p: PartitionRef, offset: bigint): Promise<void> {
    await this.redis.set(this.keys.partition(p).replayHold(), offset.toString(), 'EX', REPLAY_MARK_TTL_S);
  }
}
