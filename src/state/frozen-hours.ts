/**
 * How a frozen hour (or a customer's cut) is kept in its Redis hash: the hour's own entries (`__hour`,
 * `__through`, `__customer`, `__states`) beside the frozen records, whose fields always hold a separator;
 * and the reads over a range of hours that tell which were frozen or cut, and through which checkpoint.
 */
import { MeterlineError } from '../errors.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { FIELD_SEPARATOR, type PartitionKeys } from '../redis/keys.ts';
import type { FrozenHour } from './window-types.ts';

/** A frozen hour (or cut) as stored in its hash. */
export function parseFrozenHash(hourMs: number, all: Record<string, string>): FrozenHour {
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

/** The hash fields and values (flat) that store a frozen hour, or a customer's cut of it. */
export function frozenHashFields(h: FrozenHour, customer?: string): string[] {
  const fields: string[] = ['__hour', String(h.hourMs), '__through', h.through.toString()];
  if (customer !== undefined) fields.push('__customer', customer);
  fields.push('__states', JSON.stringify(h.states.map(([f, e, o]) => [f, e, o ? '1' : '0'])));
  for (const [field, frozen] of h.records) fields.push(field, frozen);
  return fields;
}

/** One pipelined read per hour from `fromMs` to `toMs`: each hour with its reply. */
async function eachHour(
  redis: ScriptedRedis,
  fromMs: number,
  toMs: number,
  what: string,
  queue: (pipeline: ReturnType<ScriptedRedis['pipeline']>, hourMs: number) => void,
): Promise<[hourMs: number, reply: unknown][]> {
  const hours: number[] = [];
  for (let h = fromMs; h <= toMs; h += 3_600_000) hours.push(h);
  const pipeline = redis.pipeline();
  for (const h of hours) queue(pipeline, h);
  const res = (await pipeline.exec()) ?? [];
  return hours.map((h, i) => {
    const [err, value] = res[i] ?? [new Error('no reply'), null];
    if (err)
      throw new MeterlineError('redis_error', `reading ${what} failed`, { retriable: true, cause: err });
    return [h, value];
  });
}

/** Customers cut early in the hours from `fromMs` to `toMs`, each with the checkpoint of its cut. */
export async function readCutsThrough(
  redis: ScriptedRedis,
  k: PartitionKeys,
  fromMs: number,
  toMs: number,
): Promise<Map<number, Map<string, bigint>>> {
  const out = new Map<number, Map<string, bigint>>();
  for (const [h, value] of await eachHour(redis, fromMs, toMs, 'the cuts', (pl, h) =>
    pl.hgetall(k.cuts(h)),
  )) {
    const entries = Object.entries((value as Record<string, string>) ?? {});
    if (entries.length) out.set(h, new Map(entries.map(([c, t]) => [c, BigInt(t)])));
  }
  return out;
}

/** The hours from `fromMs` to `toMs` frozen, each with its checkpoint (-1 when not recorded). */
export async function readFrozenThrough(
  redis: ScriptedRedis,
  k: PartitionKeys,
  fromMs: number,
  toMs: number,
): Promise<Map<number, bigint>> {
  const out = new Map<number, bigint>();
  const replies = await eachHour(redis, fromMs, toMs, 'the frozen hours', (pl, h) =>
    pl.hmget(k.finalized(h), '__hour', '__through'),
  );
  for (const [h, value] of replies) {
    const [hour, through] = value as (string | null)[];
    if (hour != null) out.set(h, through == null ? -1n : BigInt(through));
  }
  return out;
}
