/**
 * The hourly window state store in Redis. The only code that calls the window Lua scripts; it builds their
 * KEYS and ARGV from the key builder and maps their failure codes to typed errors.
 */
import { MeterlineError } from '../errors.ts';
import { SCRIPT_CODE, scriptError } from '../metering/script-codes.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { baseField, FIELD_SEPARATOR, type Keys, type PartitionRef } from '../redis/keys.ts';

export type AggregationOp = 's' | 'm';

export interface PendingAggregate {
  field: string;
  op: AggregationOp;
  /** Event ids and their micro-units, index by index. */
  ids: string[];
  micros: number[];
}

/** Events of one hour that go to one place. */
export interface HourGroup {
  /** The events' own hour (its dedupe set). */
  hourMs: number;
  /**
   * Where their quantities go: their own hour, a later open hour (late events carried forward), or
   * nowhere (undefined: a frozen record counts them already; only their ids are remembered).
   */
  targetMs: number | undefined;
  aggregates: PendingAggregate[];
}

export interface ApplyResult {
  applied: number;
  duplicates: number;
  carried: number;
  /** Replayed events a frozen record counts already: remembered for dedupe, not counted again. */
  counted: number;
}

/** A frozen hour as kept in Redis and in the changelog. */
export interface FrozenHour {
  hourMs: number;
  /** The partition checkpoint it was frozen at (-1 before any input): later events were carried. */
  through: bigint;
  /** Field (customer␟dimension) → frozen record, as stored. */
  records: [field: string, frozen: string][];
  /** The model state it left: field, encoded state ('' when none), whether it owes the next hour. */
  states: [field: string, encoded: string, owes: boolean][];
}

/** One customer's hour closed early (the final flush after unsubscribe-pending). */
export interface CutHour extends FrozenHour {
  customer: string;
}

/** What a Redis that lost a partition's state is rebuilt with (from the changelog). */
export interface PartitionSnapshot {
  /** Frozen hours, and whether each reached the submission topic. */
  hours: (FrozenHour & { emitted: boolean })[];
  /** Customers' hours closed early, and whether each reached the submission topic. */
  cuts: (CutHour & { emitted: boolean })[];
  /** Field → encoded model state ('' when empty), whether it owes the next hour, the hour it is as of. */
  states: Map<string, { encoded: string; owes: boolean; hourMs: number }>;
}

/** One hour of one partition as the commit stage reads it before freezing. */
export interface HourSnapshot {
  /** The partition checkpoint the snapshot was read at ('' when none). */
  checkpoint: string;
  finalized: boolean;
  /** Aggregate field (customer␟dimension[␟tags]) → micro-units. */
  aggregates: [string, bigint][];
  /** Customer␟dimension fields whose state owes units to the next closed hour. */
  due: string[];
  /** Customer␟dimension → encoded model state (null when none). */
  states: Map<string, string | null>;
  /** Customers whose hour was closed early (the final flush): the hour's own close leaves them out. */
  cuts: Set<string>;
}

export interface WindowStoreOptions {
  /** How long event ids are remembered for dedupe. */
  dedupeTtlMs: number;
  /**
   * How long a finalized hour is remembered once emitted (late events are carried forward while it is);
   * it never expires while it waits for its emit.
   */
  finalizedTtlMs: number;
  lateAuditCap?: number;
}

/** How many event contexts a finalize span links to, at most. */
export const TRACE_LINKS_PER_HOUR = 16;

export type LatePolicy = 'carry-forward' | 'dead-letter';

export interface PartitionTime {
  partition: number;
  /** Highest event time applied, ms; undefined before the first event. */
  maxEventTime: number | undefined;
  /** Wall clock of the last batch that carried valid events, ms. */
  activeAt: number | undefined;
  /** Last offset applied. */
  checkpoint: bigint | undefined;
}

export class WindowStore {
  readonly redis: ScriptedRedis;
  readonly keys: Keys;
  readonly options: Required<WindowStoreOptions>;

  constructor(redis: ScriptedRedis, keys: Keys, options: WindowStoreOptions) {
    this.redis = redis;
    this.keys = keys;
    this.options = { lateAuditCap: 10_000, ...options };
  }

  /** Takes ownership of a partition: bumps its fencing token and reads its checkpoint. */
  async claim(p: PartitionRef): Promise<{ token: string; checkpoint: string | undefined }> {
    const k = this.keys.partition(p);
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
    const k = this.keys.partition(p);
    const { offsets, groups } = batch;
    const keys: string[] = [k.checkpoint(), k.fence(), k.openHours(), k.lateAudit(), k.time()];
    const args: (string | number)[] = [
      token,
      offsets.after ?? '',
      offsets.last,
      Math.ceil(this.options.dedupeTtlMs / 1000),
      groups.length,
      this.options.lateAuditCap,
      batch.maxEventTimeMs ?? '',
      batch.nowMs,
    ];
    for (const g of groups) {
      const target = g.targetMs ?? g.hourMs;
      keys.push(k.aggregates(target), k.seen(g.hourMs), k.finalized(target));
      args.push(g.hourMs, g.targetMs ?? '', g.aggregates.length);
      for (const agg of g.aggregates) {
        args.push(agg.field, agg.op, agg.ids.length);
        for (let i = 0; i < agg.ids.length; i++) args.push(agg.ids[i] as string, agg.micros[i] as number);
      }
    }
    const res = (await this.redis.applyBatch(keys.length, ...keys, ...args).catch((cause: unknown) => {
      // Whether it landed is unknown (a lost reply): the retry learns it from the checkpoint.
      throw new MeterlineError('redis_error', 'applying the batch failed', { retriable: true, cause });
    })) as number[];
    const failure = scriptError(res, p, { held: offsets.after });
    if (failure) throw failure;
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
    const k = this.keys.partition(p);
    const keys = [
      k.fence(),
      k.checkpoint(),
      k.aggregates(hourMs),
      k.finalized(hourMs),
      k.cuts(hourMs),
      k.cut(hourMs, customer),
      k.pendingCuts(),
      k.modelState(),
      k.due(),
    ];
    const args: (string | number)[] = [token, snapshotCheckpoint, hourMs, customer, aggregateFields.length];
    args.push(...aggregateFields, records.length);
    for (const [field, frozen] of records) args.push(field, frozen);
    args.push(states.length);
    for (const [field, encoded, owes] of states) args.push(field, encoded, owes ? '1' : '0');
    const res = await this.redis.cutCustomer(keys.length, ...keys, ...args);
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
    const res = await this.redis.markEmitted(
      3,
      k.fence(),
      k.pendingCuts(),
      k.cut(hourMs, customer),
      token,
      `${hourMs}|${customer}`,
      ttl,
    );
    const failure = scriptError(res, p);
    if (failure) throw failure;
    // The hour's cut index outlives the hour's frozen records, which it tells apart from the cut's.
    await this.redis.expire(k.cuts(hourMs), ttl + 3_600);
  }

  /** Customers cut early in the hours from `fromMs` to `toMs`, each with the checkpoint of its cut. */
  async cutsThrough(
    p: PartitionRef,
    fromMs: number,
    toMs: number,
  ): Promise<Map<number, Map<string, bigint>>> {
    const k = this.keys.partition(p);
    const out = new Map<number, Map<string, bigint>>();
    for (const [h, value] of await this.#eachHour(fromMs, toMs, 'the cuts', (pl, h) =>
      pl.hgetall(k.cuts(h)),
    )) {
      const entries = Object.entries((value as Record<string, string>) ?? {});
      if (entries.length) out.set(h, new Map(entries.map(([c, t]) => [c, BigInt(t)])));
    }
    return out;
  }

  /** One pipelined read per hour from `fromMs` to `toMs`: each hour with its reply. */
  async #eachHour(
    fromMs: number,
    toMs: number,
    what: string,
    queue: (pipeline: ReturnType<ScriptedRedis['pipeline']>, hourMs: number) => void,
  ): Promise<[hourMs: number, reply: unknown][]> {
    const hours: number[] = [];
    for (let h = fromMs; h <= toMs; h += 3_600_000) hours.push(h);
    const pipeline = this.redis.pipeline();
    for (const h of hours) queue(pipeline, h);
    const res = (await pipeline.exec()) ?? [];
    return hours.map((h, i) => {
      const [err, value] = res[i] ?? [new Error('no reply'), null];
      if (err)
        throw new MeterlineError('redis_error', `reading ${what} failed`, { retriable: true, cause: err });
      return [h, value];
    });
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
    const k = this.keys.partition(p);
    const keys = [
      k.fence(),
      k.checkpoint(),
      k.aggregates(hourMs),
      k.finalized(hourMs),
      k.openHours(),
      k.pendingEmit(),
      k.modelState(),
      k.due(),
      k.closedThrough(),
    ];
    const args: (string | number)[] = [token, snapshotCheckpoint, hourMs, records.length];
    for (const [field, frozen] of records) args.push(field, frozen);
    args.push(states.length);
    for (const [field, encoded, owes] of states) args.push(field, encoded, owes ? '1' : '0');
    const res = await this.redis.finalizeHour(keys.length, ...keys, ...args);
    const failure = scriptError(res, p);
    if (failure) throw failure;
    if (res[0] === SCRIPT_CODE.moved) return 'moved';
    return res[0] === 1 ? 'frozen' : 'already';
  }

  /**
   * Keeps the newest `TRACE_LINKS_PER_HOUR` event trace contexts per hour. Tracing data, not billing
   * data: written after the batch commits, and a lost sample only costs a link.
   */
  async addTraceLinks(p: PartitionRef, byHour: ReadonlyMap<number, readonly string[]>): Promise<void> {
    if (!byHour.size) return;
    const k = this.keys.partition(p);
    const ttlSeconds = Math.ceil(this.options.dedupeTtlMs / 1000);
    const pipeline = this.redis.pipeline();
    for (const [hourMs, traceparents] of byHour) {
      if (!traceparents.length) continue;
      pipeline.lpush(k.traceLinks(hourMs), ...traceparents);
      pipeline.ltrim(k.traceLinks(hourMs), 0, TRACE_LINKS_PER_HOUR - 1);
      pipeline.expire(k.traceLinks(hourMs), ttlSeconds);
    }
    await pipeline.exec();
  }

  /** The sampled event trace contexts of an hour (newest first). */
  async traceLinks(p: PartitionRef, hourMs: number): Promise<string[]> {
    return this.redis.lrange(this.keys.partition(p).traceLinks(hourMs), 0, -1);
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
  async frozenThrough(p: PartitionRef, fromMs: number, toMs: number): Promise<Map<number, bigint>> {
    const k = this.keys.partition(p);
    const out = new Map<number, bigint>();
    const replies = await this.#eachHour(fromMs, toMs, 'the frozen hours', (pl, h) =>
      pl.hmget(k.finalized(h), '__hour', '__through'),
    );
    for (const [h, value] of replies) {
      const [hour, through] = value as (string | null)[];
      if (hour != null) out.set(h, through == null ? -1n : BigInt(through));
    }
    return out;
  }

  /**
   * Brings a partition's Redis state up to its changelog, before any batch applies: after a loss, every
   * frozen hour (emitted ones expire like any emitted hour; the others wait for their emit), the latest
   * hour closed and the model state; after a fall-back (failover to a lagging replica, an older snapshot),
   * only the hours frozen after the latest one Redis still has, and the state they left. Idempotent: a
   * restore cut short is simply run again. Returns how many hours were restored.
   */
  async restore(p: PartitionRef, snapshot: PartitionSnapshot): Promise<number> {
    const k = this.keys.partition(p);
    const known = await this.closedThrough(p);
    const hours = snapshot.hours.filter((h) => known === undefined || h.hourMs > known);
    // Cuts Redis does not hold (they come after any hour it still has closed, or Redis lost everything).
    const held = await this.cutsThrough(
      p,
      snapshot.cuts[0]?.hourMs ?? 0,
      snapshot.cuts[snapshot.cuts.length - 1]?.hourMs ?? -1,
    );
    const cuts = snapshot.cuts.filter((c) => !held.get(c.hourMs)?.has(c.customer));
    if (!hours.length && !cuts.length) return 0;
    const ttl = Math.ceil(this.options.finalizedTtlMs / 1000);
    let pipeline = this.redis.pipeline();
    let queued = 0;
    const flush = async () => {
      const res = (await pipeline.exec()) ?? [];
      const failed = res.find(([e]) => e);
      if (failed) {
        throw new MeterlineError('redis_error', 'restoring the partition failed', {
          retriable: true,
          cause: failed[0],
        });
      }
      pipeline = this.redis.pipeline();
      queued = 0;
    };
    let closed: number | undefined;
    for (const h of hours) {
      const key = k.finalized(h.hourMs);
      const fields: string[] = [
        '__hour',
        String(h.hourMs),
        '__through',
        h.through.toString(),
        '__states',
        JSON.stringify(h.states.map(([f, e, o]) => [f, e, o ? '1' : '0'])),
      ];
      for (const [field, frozen] of h.records) fields.push(field, frozen);
      for (let i = 0; i < fields.length; i += 2_000) pipeline.hset(key, ...fields.slice(i, i + 2_000));
      if (h.emitted) pipeline.expire(key, ttl);
      else pipeline.zadd(k.pendingEmit(), h.hourMs, String(h.hourMs));
      // Usage of the hour Redis still held (it fell behind) is in the frozen records: drop it.
      pipeline.del(k.aggregates(h.hourMs));
      pipeline.zrem(k.openHours(), String(h.hourMs));
      if (closed === undefined || h.hourMs > closed) closed = h.hourMs;
      if (++queued >= 100) await flush();
    }
    for (const c of cuts) {
      const key = k.cut(c.hourMs, c.customer);
      const fields: string[] = [
        '__hour',
        String(c.hourMs),
        '__through',
        c.through.toString(),
        '__customer',
        c.customer,
        '__states',
        JSON.stringify(c.states.map(([f, e, o]) => [f, e, o ? '1' : '0'])),
      ];
      for (const [field, frozen] of c.records) fields.push(field, frozen);
      for (let i = 0; i < fields.length; i += 2_000) pipeline.hset(key, ...fields.slice(i, i + 2_000));
      pipeline.hset(k.cuts(c.hourMs), c.customer, c.through.toString());
      if (c.emitted) pipeline.expire(key, ttl);
      else pipeline.zadd(k.pendingCuts(), c.hourMs, `${c.hourMs}|${c.customer}`);
      if (++queued >= 100) await flush();
    }
    const cutHours = new Set(cuts.map((c) => c.hourMs));
    for (const [field, { encoded, owes, hourMs }] of snapshot.states) {
      if (known !== undefined && hourMs <= known && !cutHours.has(hourMs)) continue;
      if (encoded) pipeline.hset(k.modelState(), field, encoded);
      else pipeline.hdel(k.modelState(), field);
      if (owes) pipeline.sadd(k.due(), field);
      else pipeline.srem(k.due(), field);
      if (++queued >= 1_000) await flush();
    }
    if (closed !== undefined) pipeline.set(k.closedThrough(), String(closed));
    await flush();
    // A cut customer's usage of the hour is in its cut records, not in the hour's aggregates any more.
    for (const c of cuts) {
      const prefix = `${c.customer}${FIELD_SEPARATOR}`;
      const fields = (await this.redis.hkeys(k.aggregates(c.hourMs))).filter((f) => f.startsWith(prefix));
      if (fields.length) await this.redis.hdel(k.aggregates(c.hourMs), ...fields);
    }
    return hours.length + cuts.length;
  }

  /** How many hours hold open aggregates on the partition. */
  async openHourCount(p: PartitionRef): Promise<number> {
    return this.redis.zcard(this.keys.partition(p).openHours());
  }

  /** The oldest hour of the partition not yet on the submission topic: open, or frozen but not emitted. */
  async oldestUnsubmittedHour(p: PartitionRef): Promise<number | undefined> {
    const k = this.keys.partition(p);
    const res = await this.redis
      .multi()
      .zrange(k.openHours(), '0', '0')
      .zrange(k.pendingEmit(), '0', '0')
      .exec();
    const hours = (res ?? []).flatMap(([, v]) => (v as string[]) ?? []).map(Number);
    return hours.length ? Math.min(...hours) : undefined;
  }

  /** The latest hour closed on the partition, if any. */
  async closedThrough(p: PartitionRef): Promise<number | undefined> {
    const v = await this.redis.get(this.keys.partition(p).closedThrough());
    return v === null ? undefined : Number(v);
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

  /** Whether some customer's model state owes units to the next closed hour. */
  async hasDue(p: PartitionRef): Promise<boolean> {
    return (await this.redis.scard(this.keys.partition(p).due())) > 0;
  }

  /**
   * Marks a frozen hour emitted (or dead-lettered): it no longer waits, and its frozen records start to
   * expire after the finalized-hour TTL, not before.
   */
  async markEmitted(p: PartitionRef, token: string, hourMs: number): Promise<void> {
    const k = this.keys.partition(p);
    const res = await this.redis.markEmitted(
      3,
      k.fence(),
      k.pendingEmit(),
      k.finalized(hourMs),
      token,
      hourMs,
      Math.ceil(this.options.finalizedTtlMs / 1000),
    );
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

  /** Fields of a frozen hour already emitted (or dead-lettered) while others of it are held. */
  async sentFields(p: PartitionRef, hourMs: number): Promise<Set<string>> {
    return new Set(await this.redis.smembers(this.keys.partition(p).sent(hourMs)));
  }

  /** Notes fields of a frozen hour as emitted (or dead-lettered), and no longer held. */
  async markSent(p: PartitionRef, hourMs: number, fields: readonly string[]): Promise<void> {
    if (!fields.length) return;
    const k = this.keys.partition(p);
    await this.redis
      .multi()
      .sadd(k.sent(hourMs), ...fields)
      // Outlives the hour's deadline; markEmitted's caller deletes it once the whole hour is out.
      .expire(k.sent(hourMs), Math.ceil(this.options.finalizedTtlMs / 1000))
      .hdel(k.held(), ...fields.map((f) => `${hourMs}|${f}`))
      .exec();
  }

  /** When each of these fields of a frozen hour was first held (now, for those held just now). */
  async heldSince(
    p: PartitionRef,
    hourMs: number,
    fields: readonly string[],
    nowMs: number,
  ): Promise<Map<string, number>> {
    const k = this.keys.partition(p);
    const pipeline = this.redis.pipeline();
    for (const f of fields) pipeline.hsetnx(k.held(), `${hourMs}|${f}`, String(nowMs));
    pipeline.hmget(k.held(), ...fields.map((f) => `${hourMs}|${f}`));
    const res = (await pipeline.exec()) ?? [];
    const since = (res[res.length - 1]?.[1] as (string | null)[] | undefined) ?? [];
    return new Map(fields.map((f, i) => [f, Number(since[i] ?? nowMs)]));
  }

  /** These fields of the hour are held no more (they went out). */
  async releaseHeld(p: PartitionRef, hourMs: number, fields: readonly string[]): Promise<void> {
    if (!fields.length) return;
    await this.redis.hdel(this.keys.partition(p).held(), ...fields.map((f) => `${hourMs}|${f}`));
  }

  /** Every held record of the partition: `<hour>|<field>` → since (ms). */
  async heldRecords(p: PartitionRef): Promise<Map<string, number>> {
    const all = await this.redis.hgetall(this.keys.partition(p).held());
    return new Map(Object.entries(all).map(([k, v]) => [k, Number(v)]));
  }

  /** The whole hour is out: its sent set goes. */
  async forgetSent(p: PartitionRef, hourMs: number): Promise<void> {
    await this.redis.del(this.keys.partition(p).sent(hourMs));
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

  /** Event time and checkpoint of every partition of a topic (one call each: they live in different slots). */
  async partitionTimes(topic: string, partitions: number): Promise<PartitionTime[]> {
    return Promise.all(
      Array.from({ length: partitions }, async (_, partition) => {
        const k = this.keys.partition({ topic, partition });
        const res = await this.redis
          .multi()
          .hmget(k.time(), 'maxEventTime', 'activeAt')
          .get(k.checkpoint())
          .exec();
        const [max, active] = (res?.[0]?.[1] as (string | null)[] | undefined) ?? [null, null];
        const checkpoint = (res?.[1]?.[1] as string | null | undefined) ?? null;
        return {
          partition,
          maxEventTime: max == null ? undefined : Number(max),
          activeAt: active == null ? undefined : Number(active),
          checkpoint: checkpoint === null ? undefined : BigInt(checkpoint),
        };
      }),
    );
  }

  /** The end of the replay after a state loss, if one is under way (offsets below it are replays). */
  async replayUntil(p: PartitionRef): Promise<bigint | undefined> {
    const v = await this.redis.get(this.keys.partition(p).replay());
    return v === null ? undefined : BigInt(v);
  }

  async setReplayUntil(p: PartitionRef, offset: bigint): Promise<void> {
    await this.redis.set(this.keys.partition(p).replay(), offset.toString(), 'EX', 7 * 24 * 3600);
  }

  /** Until the replay reaches this offset (the log end when recovery began), no hour closes. */
  async replayHold(p: PartitionRef): Promise<bigint | undefined> {
    const v = await this.redis.get(this.keys.partition(p).replayHold());
    return v === null ? undefined : BigInt(v);
  }

  async setReplayHold(p: PartitionRef, offset: bigint): Promise<void> {
    await this.redis.set(this.keys.partition(p).replayHold(), offset.toString(), 'EX', 7 * 24 * 3600);
  }
}

/** A frozen hour (or cut) as stored in its hash. */
function parseFrozenHash(hourMs: number, all: Record<string, string>): FrozenHour {
  const states = all.__states ? (JSON.parse(all.__states) as [string, string, string][] | object) : [];
  return {
    hourMs,
    // Hours frozen by an older version: every later event was carried.
    through: all.__through === undefined ? -1n : BigInt(all.__through),
    // Real fields hold a separator; the hour's own entries (__hour, __through, __states) never do.
    records: Object.entries(all).filter(([field]) => field.includes(FIELD_SEPARATOR)),
    states: Array.isArray(states)
      ? states.map(([f, e, o]) => [f, e, o === '1'] as [string, string, boolean])
      : [],
  };
}
