/**
 * One typed function per Lua script in ./lua/: each builds the script's KEYS from the key builder and its
 * ARGV from typed arguments, in the order the script's header lists them, so no caller counts keys or
 * lays out ARGV by hand. They return the script's raw reply; the stores map its codes to typed errors
 * (metering/script-codes.ts).
 */
import type { ScriptedRedis } from './client.ts';
import { FIELD_SEPARATOR, type Keys, type PartitionKeys } from './keys.ts';

/** One aggregate of a batch group: only the events new to the partition's dedupe index. */
export interface BatchAggregate {
  field: string;
  op: 's' | 'm';
  /** New events. */
  events: number;
  /** Their sum ('s') or peak ('m') in micro-units. */
  value: number;
  /** A late group's new event ids, for the late audit (empty otherwise). */
  ids: readonly string[];
}

/** Events of one hour bound for one place, as applyBatch.lua takes them. */
export interface BatchGroup {
  hourMs: number;
  /** The hour their quantities go to; undefined: counted already (only their ids are remembered). */
  targetMs: number | undefined;
  /** The new events' id hashes, 16 bytes each (dedupe-index.ts). */
  hashes: Buffer;
  aggregates: readonly BatchAggregate[];
}

/** applyBatch.lua: one partition batch, atomically. Reply: counts, or a negative code first. */
export function applyBatch(
  redis: ScriptedRedis,
  k: PartitionKeys,
  a: {
    token: string;
    after: string | undefined;
    last: string;
    dedupeTtlSeconds: number;
    lateAuditCap: number;
    maxEventTimeMs: number | undefined;
    nowMs: number;
    /** Events the caller's dedupe index refused. */
    duplicates: number;
    groups: readonly BatchGroup[];
  },
): Promise<number[]> {
  const keys: string[] = [k.checkpoint(), k.fence(), k.openHours(), k.lateAudit(), k.time(), k.dedupeHours()];
  const args: (string | number | Buffer)[] = [
    a.token,
    a.after ?? '',
    a.last,
    a.dedupeTtlSeconds,
    a.groups.length,
    a.lateAuditCap,
    a.maxEventTimeMs ?? '',
    a.nowMs,
    a.duplicates,
  ];
  for (const g of a.groups) {
    const target = g.targetMs ?? g.hourMs;
    keys.push(k.aggregates(target), k.dedupeLog(g.hourMs), k.finalized(target));
    args.push(g.hourMs, g.targetMs ?? '', g.hashes, g.aggregates.length);
    const late = g.targetMs !== undefined && g.targetMs !== g.hourMs;
    for (const agg of g.aggregates) {
      args.push(agg.field, agg.op, agg.events, agg.value);
      if (late) for (const id of agg.ids) args.push(id);
    }
  }
  // Its key count depends on the batch (applyBatch.lua has none in its name): passed first.
  return redis.applyBatch(keys.length, ...keys, ...args) as Promise<number[]>;
}

/**
 * importSeenIds.lua: moves a chunk of an hour's pre-v2 dedupe set into its dedupe log. Reply: the ids moved,
 * 0 when the set is gone, or a negative code.
 */
export function importSeenIds(
  redis: ScriptedRedis,
  k: PartitionKeys,
  a: {
    token: string;
    hourMs: number;
    hashes: Buffer;
    nowMs: number;
    dedupeTtlMs: number;
    ids: readonly string[];
  },
): Promise<number> {
  return redis.importSeenIds(
    k.fence(),
    k.seen(a.hourMs),
    k.dedupeLog(a.hourMs),
    k.dedupeHours(),
    a.token,
    a.hourMs,
    a.hashes,
    a.nowMs,
    a.dedupeTtlMs,
    ...a.ids,
  );
}

type Records = readonly [field: string, frozen: string][];
type States = readonly [field: string, encoded: string, owesNextHour: boolean][];

/** The R records and S states a freeze or a cut stores, as ARGV: R, pairs, S, triples. */
function recordsAndStates(records: Records, states: States): (string | number)[] {
  const args: (string | number)[] = [records.length];
  for (const [field, frozen] of records) args.push(field, frozen);
  args.push(states.length);
  for (const [field, encoded, owes] of states) args.push(field, encoded, owes ? '1' : '0');
  return args;
}

/** finalizeHour.lua: freezes one hour. Reply: { 1 } frozen, { 0 } already, or a negative code. */
export function finalizeHour(
  redis: ScriptedRedis,
  k: PartitionKeys,
  a: { token: string; checkpoint: string; hourMs: number; records: Records; states: States },
): Promise<number[]> {
  return redis.finalizeHour(
    k.fence(),
    k.checkpoint(),
    k.aggregates(a.hourMs),
    k.finalized(a.hourMs),
    k.openHours(),
    k.pendingEmit(),
    k.modelState(),
    k.due(),
    k.closedThrough(),
    a.token,
    a.checkpoint,
    a.hourMs,
    ...recordsAndStates(a.records, a.states),
  );
}

/** cutCustomer.lua: closes one customer's hour early. Reply: { 1 } cut, { 0 } nothing to do, or a code. */
export function cutCustomer(
  redis: ScriptedRedis,
  k: PartitionKeys,
  a: {
    token: string;
    checkpoint: string;
    hourMs: number;
    customer: string;
    aggregateFields: readonly string[];
    records: Records;
    states: States;
  },
): Promise<number[]> {
  return redis.cutCustomer(
    k.fence(),
    k.checkpoint(),
    k.aggregates(a.hourMs),
    k.finalized(a.hourMs),
    k.cuts(a.hourMs),
    k.cut(a.hourMs, a.customer),
    k.pendingCuts(),
    k.modelState(),
    k.due(),
    a.token,
    a.checkpoint,
    a.hourMs,
    a.customer,
    a.aggregateFields.length,
    ...a.aggregateFields,
    ...recordsAndStates(a.records, a.states),
  );
}

/**
 * markEmitted.lua: a frozen hour (or a cut) is out; it leaves `pending` and its records start to expire.
 * Reply: 1, or a negative code.
 */
export function markEmitted(
  redis: ScriptedRedis,
  k: PartitionKeys,
  a: { token: string; pending: string; frozen: string; member: string | number; ttlSeconds: number },
): Promise<number> {
  return redis.markEmitted(k.fence(), a.pending, a.frozen, a.token, a.member, a.ttlSeconds);
}

/** The bucket's settings, as rateLimit.lua takes them. */
export interface BucketSettings {
  rate: number;
  burst: number;
  minRate: number;
  recoveryPerSecond: number;
}

/** rateLimit.lua: 'take' answers the ms to wait (0: taken); 'throttled' the new rate in milli-req/s. */
export function rateLimit(
  redis: ScriptedRedis,
  bucket: string,
  action: 'take' | 'throttled',
  s: BucketSettings,
): Promise<number> {
  return redis.rateLimit(bucket, action, s.rate, s.burst, s.minRate, s.recoveryPerSecond);
}

/** rateWindow.lua: 0 when the request is allowed, else the ms until the window ends. */
export function rateWindow(
  redis: ScriptedRedis,
  counter: string,
  windowMs: number,
  allowed: number,
): Promise<number> {
  return redis.rateWindow(counter, windowMs, allowed);
}

/**
 * applyCustomerEvent.lua on `entries` and its `index`: 1 applied, 0 the entry reflects a newer event,
 * -1 missing (and not created).
 */
export function applyCustomerEvent(
  redis: ScriptedRedis,
  a: {
    entries: string;
    index: string;
    field: string;
    patch: object;
    eventMs: number;
    create: boolean;
    indexFields: readonly string[];
  },
): Promise<number> {
  return redis.applyCustomerEvent(
    a.entries,
    a.index,
    a.field,
    JSON.stringify(a.patch),
    a.eventMs,
    a.create ? 1 : 0,
    ...a.indexFields,
  );
}

/** migrateDirectory.lua: entries moved to one per product subscription, or -1 when done before. */
export function migrateDirectory(redis: ScriptedRedis, keys: Keys): Promise<number> {
  return redis.migrateDirectory(
    keys.customerDirectory(),
    keys.customerIndex(),
    keys.customerSubscriptions(),
    keys.customerSubscriptionIndex(),
    keys.customerDirectoryVersion(),
    FIELD_SEPARATOR,
  );
}

/** linkTenant.lua: moves a subscription's entry from field `from` to `to` (codes in script-codes.ts). */
export function linkTenant(
  redis: ScriptedRedis,
  keys: Keys,
  a: { from: string; to: string; tenant: string; indexFields: readonly string[] },
): Promise<number> {
  return redis.linkTenant(
    keys.customerSubscriptions(),
    keys.customerSubscriptionIndex(),
    keys.customerDirectoryChanges(),
    a.from,
    a.to,
    a.tenant,
    ...a.indexFields,
  );
}
