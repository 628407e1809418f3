/**
 * The window scripts on a real Redis: atomic apply with dedupe and checkpoint, fencing, late events,
 * exact sums in micro-units, and finalization that freezes once and carries remainders.
 */
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { HourFinalizer } from '../../../src/commit/hour-finalizer.ts';
import { MAX_AWS_QUANTITY } from '../../../src/commit/metering-models.ts';
import { parsePlan } from '../../../src/config/plan.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { aggregateField, Keys } from '../../../src/redis/keys.ts';
import { WindowStore } from '../../../src/state/window-store.ts';
import type { HourGroup } from '../../../src/state/window-types.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { deleteKeys, stackEnv, testLogger, uniqueId } from '../../support/harness.ts';

const redis = createRedis(stackEnv().redisUrl);
const H0 = Date.parse('2026-11-27T10:00:00Z');
const H1 = H0 + HOUR_MS;
const H2 = H1 + HOUR_MS;
const NOW_HOUR = H2 + HOUR_MS;
const finalizer = new HourFinalizer({
  plan: parsePlan({
    productCode: 'prod-t',
    dimensions: [{ name: 'calls' }, { name: 'seats', aggregation: 'max' }],
  }),
  contractOf: () => undefined,
  logger: testLogger(),
});
let prefix: string;
const prefixes: string[] = [];
let store: WindowStore;
const p = { topic: 'usage', partition: 0 };

const group = (
  hourMs: number,
  field: string,
  events: [string, number][],
  op: 's' | 'm' = 's',
  /** null: a frozen record counts these already. */
  targetMs: number | null = hourMs,
): HourGroup => ({
  hourMs,
  targetMs: targetMs ?? undefined,
  aggregates: [{ field, op, ids: events.map(([id]) => id), micros: events.map(([, micros]) => micros) }],
});
/** A contiguous batch: the task holds the checkpoint just before `first`. */
const offsets = (first: number, last: number) => ({
  after: first === 0 ? undefined : String(first - 1),
  last: String(last),
});
const calls = aggregateField('acme', 'calls');
const apply = (token: string, o: { after: string | undefined; last: string }, groups: HourGroup[]) =>
  store.applyBatch(p, token, {
    offsets: o,
    groups,
    maxEventTimeMs: Math.max(...groups.map((g) => g.hourMs)),
    nowMs: NOW_HOUR + 60_000,
  });

beforeEach(() => {
  prefix = uniqueId('ws');
  prefixes.push(prefix);
  store = new WindowStore(redis, new Keys(prefix), {
    dedupeTtlMs: 48 * HOUR_MS,
    finalizedTtlMs: 48 * HOUR_MS,
  });
});
afterAll(async () => {
  for (const used of prefixes) await deleteKeys(used);
  redis.disconnect();
});

describe('applyBatch', () => {
  it('counts each event id once, within and across batches', async () => {
    const { token } = await store.claim(p);
    const r1 = await apply(token, offsets(0, 2), [
      group(H0, calls, [
        ['a', 1],
        ['b', 2],
        ['a', 1],
      ]),
    ]);
    const r2 = await apply(token, offsets(3, 4), [
      group(H0, calls, [
        ['b', 2],
        ['c', 4],
      ]),
    ]);
    expect(r1).toEqual({ applied: 2, duplicates: 1, carried: 0, counted: 0 });
    expect(r2).toEqual({ applied: 1, duplicates: 1, carried: 0, counted: 0 });
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), calls)).toBe('7');
    expect(await redis.get(new Keys(prefix).partition(p).checkpoint())).toBe('4');
  });

  it('tells a task whose checkpoint is behind Redis (a lost reply) how far Redis applied, changing nothing', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 9), [group(H0, calls, [['a', 5]])]);
    // The reply of 0..9 was lost: the task still holds 4, and its re-fetched batch runs to 12.
    await expect(
      apply(token, { after: '4', last: '12' }, [group(H0, calls, [['z', 5]])]),
    ).rejects.toMatchObject({ code: 'stale_batch', context: { checkpoint: '9' } });
    await expect(
      apply(token, { after: undefined, last: '12' }, [group(H0, calls, [['z', 5]])]),
    ).rejects.toMatchObject({ code: 'stale_batch', context: { checkpoint: '9' } });
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), calls)).toBe('5');
    // Nothing of the refused batch is remembered: the hour's dedupe log holds the first batch alone.
    expect(await redis.llen(new Keys(prefix).partition(p).dedupeLog(H0))).toBe(1);
    // What follows Redis's checkpoint applies.
    await apply(token, { after: '9', last: '12' }, [group(H0, calls, [['z', 5]])]);
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), calls)).toBe('10');
  });

  it('compares offsets as decimal strings, beyond double precision', async () => {
    const { token } = await store.claim(p);
    await apply(token, { after: undefined, last: '9007199254740993' }, [group(H0, calls, [['a', 5]])]);
    await expect(
      apply(token, { after: '9007199254740992', last: '9007199254740999' }, [group(H0, calls, [['b', 5]])]),
    ).rejects.toMatchObject({ code: 'stale_batch', context: { checkpoint: '9007199254740993' } });
    await expect(
      apply(token, { after: '10000000000000000', last: '10000000000000001' }, [group(H0, calls, [['b', 5]])]),
    ).rejects.toMatchObject({ code: 'store_behind' });
  });

  it('tells a task that Redis is behind it (older checkpoint or older fence), changing nothing', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 9), [group(H0, calls, [['a', 5]])]);
    // A replica that missed batches 10..19 was promoted: the task holds 19, Redis 9.
    await expect(apply(token, offsets(20, 24), [group(H0, calls, [['z', 5]])])).rejects.toMatchObject({
      code: 'store_behind',
      context: { checkpoint: '9', held: '19' },
    });
    // A snapshot from before this task's claim: its fence is older than the task's token.
    await redis.set(new Keys(prefix).partition(p).fence(), String(Number(token) - 1));
    await expect(apply(token, offsets(10, 12), [group(H0, calls, [['z', 5]])])).rejects.toMatchObject({
      code: 'store_behind',
    });
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), calls)).toBe('5');
    // Nothing of the refused batch is remembered: the hour's dedupe log holds the first batch alone.
    expect(await redis.llen(new Keys(prefix).partition(p).dedupeLog(H0))).toBe(1);
    // Re-claiming gives a token Redis knows, from its own checkpoint.
    const again = await store.claim(p);
    expect(again.checkpoint).toBe('9');
    await apply(again.token, offsets(10, 12), [group(H0, calls, [['z', 5]])]);
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), calls)).toBe('10');
  });

  it('refuses a writer whose fencing token is stale', async () => {
    const zombie = await store.claim(p);
    const owner = await store.claim(p);
    expect(Number(owner.token)).toBeGreaterThan(Number(zombie.token));
    await expect(apply(zombie.token, offsets(0, 0), [group(H0, calls, [['a', 5]])])).rejects.toMatchObject({
      code: 'fenced',
    });
    await expect(finalizer.finalize(store, p, zombie.token, H0)).rejects.toMatchObject({ code: 'fenced' });
    expect(await redis.exists(new Keys(prefix).partition(p).aggregates(H0))).toBe(0);
    await apply(owner.token, offsets(0, 0), [group(H0, calls, [['a', 5]])]);
    expect(await store.claim(p)).toMatchObject({ checkpoint: '0' });
  });

  it('keeps the peak for max dimensions', async () => {
    const { token } = await store.claim(p);
    const seats = aggregateField('acme', 'seats');
    await apply(token, offsets(0, 1), [
      group(
        H0,
        seats,
        [
          ['s1', 3_000_000],
          ['s2', 7_000_000],
        ],
        'm',
      ),
    ]);
    await apply(token, offsets(2, 2), [group(H0, seats, [['s3', 5_000_000]], 'm')]);
    expect(await redis.hget(new Keys(prefix).partition(p).aggregates(H0), seats)).toBe('7000000');
  });

  it('carries events for a finalized hour into the open hour and audits them', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 0), [group(H0, calls, [['a', 1_000_000]])]);
    await finalizer.finalize(store, p, token, H0);
    const r = await apply(token, offsets(1, 2), [
      group(
        H0,
        calls,
        [
          ['late', 2_000_000],
          ['a', 1_000_000],
        ],
        's',
        NOW_HOUR,
      ),
    ]);
    expect(r).toEqual({ applied: 1, duplicates: 1, carried: 1, counted: 0 });
    const k = new Keys(prefix).partition(p);
    expect(await redis.hget(k.aggregates(NOW_HOUR), calls)).toBe('2000000');
    expect(JSON.parse((await redis.hget(k.finalized(H0), calls)) ?? '')).toMatchObject({ quantity: 1 });
    expect(await redis.lrange(k.lateAudit(), 0, -1)).toEqual([`late|${calls}|${H0}|${NOW_HOUR}`]);
    expect(await store.hoursEndingBy(p, NOW_HOUR + 2 * HOUR_MS)).toEqual([NOW_HOUR]);
  });

  it('remembers replayed events a frozen record counts already, without counting them again', async () => {
    const { token } = await store.claim(p);
    const r = await apply(token, offsets(0, 1), [
      group(
        H0,
        calls,
        [
          ['x', 5_000_000],
          ['y', 1_000_000],
        ],
        's',
        null,
      ),
    ]);
    expect(r).toEqual({ applied: 0, duplicates: 0, carried: 0, counted: 2 });
    const k = new Keys(prefix).partition(p);
    expect(await redis.exists(k.aggregates(H0))).toBe(0);
    expect(await store.hoursEndingBy(p, NOW_HOUR + 2 * HOUR_MS)).toEqual([]);
    // A resend of one of them later is a duplicate, wherever the caller would put it.
    const again = await apply(token, offsets(2, 2), [group(H0, calls, [['x', 5_000_000]], 's', H1)]);
    expect(again).toEqual({ applied: 0, duplicates: 1, carried: 0, counted: 0 });
    expect(await redis.exists(k.aggregates(H1))).toBe(0);
  });
});

describe('applyBatch against a stale view of frozen hours, and after state loss', () => {
  it('refuses, changing nothing, a batch that puts usage into an hour finalized since it was prepared', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 0), [group(H0, calls, [['a', 1_000_000]])]);
    await finalizer.finalize(store, p, token, H0);
    await expect(
      apply(token, offsets(1, 2), [group(H1, calls, [['b', 1]]), group(H0, calls, [['late', 1]])]),
    ).rejects.toMatchObject({ code: 'late_event', retriable: true });
    const k = new Keys(prefix).partition(p);
    expect(await redis.exists(k.aggregates(H1))).toBe(0);
    expect(await redis.get(k.checkpoint())).toBe('0');
    expect(await store.finalizedAmong(p, [H0, H1])).toEqual(new Set([H0]));
  });

  it('reports state_lost, not fenced, when Redis lost the partition state', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 0), [group(H0, calls, [['a', 1]])]);
    await deleteKeys(prefix);
    await expect(apply(token, offsets(1, 1), [group(H0, calls, [['b', 1]])])).rejects.toMatchObject({
      code: 'state_lost',
    });
    await expect(finalizer.finalize(store, p, token, H0)).rejects.toMatchObject({ code: 'state_lost' });
  });

  it('tracks the partition event time and the wall clock of its last valid batch', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 0), [group(H1, calls, [['a', 1]])]);
    await apply(token, offsets(1, 1), [group(H0, calls, [['b', 1]])]);
    const times = await store.partitionTimes('usage', 2);
    expect(times).toEqual([
      { partition: 0, maxEventTime: H1, activeAt: NOW_HOUR + 60_000, checkpoint: 1n },
      { partition: 1, maxEventTime: undefined, activeAt: undefined, checkpoint: undefined },
    ]);
  });
});

describe('finalizeHour', () => {
  it('freezes once: a second call returns the same records and later events cannot change them', async () => {
    const { token } = await store.claim(p);
    await apply(token, offsets(0, 0), [group(H0, calls, [['a', 3_000_000]])]);
    const first = await finalizer.finalize(store, p, token, H0);
    await apply(token, offsets(1, 1), [group(H0, calls, [['b', 9_000_000]], 's', H1)]);
    const again = await finalizer.finalize(store, p, token, H0);
    expect(first).toEqual([{ customer: 'acme', dimension: 'calls', productCode: 'prod-t', quantity: 3 }]);
    expect(again).toEqual(first);
    expect(await store.pendingEmits(p)).toEqual([H0]);
    await store.markEmitted(p, token, H0);
    expect(await store.pendingEmits(p)).toEqual([]);
  });

  it('carries fractions to the next hour of the same key, so the billed total is exact', async () => {
    const { token } = await store.claim(p);
    // 0.4 + 0.4 + 0.4 units over three hours: billed 0, 0, 1.
    let offset = 0;
    const billed: number[] = [];
    for (const hour of [H0, H1, H2]) {
      await apply(token, offsets(offset, offset), [group(hour, calls, [[`e${offset}`, 400_000]])]);
      offset += 1;
      const records = await finalizer.finalize(store, p, token, hour);
      billed.push(records[0]?.quantity ?? -1);
    }
    expect(billed).toEqual([0, 0, 1]);
    expect(await redis.hget(new Keys(prefix).partition(p).modelState(), calls)).toBe('{"carry":"200000"}');
  });

  it('caps a quantity at the AWS maximum and carries the excess', async () => {
    const { token } = await store.claim(p);
    const micros = (MAX_AWS_QUANTITY + 10) * 1_000_000;
    await apply(token, offsets(0, 0), [group(H0, calls, [['big', micros]])]);
    expect(await finalizer.finalize(store, p, token, H0)).toEqual([
      { customer: 'acme', dimension: 'calls', productCode: 'prod-t', quantity: MAX_AWS_QUANTITY },
    ]);
    await apply(token, offsets(1, 1), [group(H1, calls, [['small', 1_000_000]])]);
    expect(await finalizer.finalize(store, p, token, H1)).toEqual([
      { customer: 'acme', dimension: 'calls', productCode: 'prod-t', quantity: 11 },
    ]);
  });

  it('bills a fractional peak as a whole unit', async () => {
    const { token } = await store.claim(p);
    const seats = aggregateField('acme', 'seats');
    await apply(token, offsets(0, 0), [group(H0, seats, [['s', 2_500_000]], 'm')]);
    expect(await finalizer.finalize(store, p, token, H0)).toEqual([
      { customer: 'acme', dimension: 'seats', productCode: 'prod-t', quantity: 3 },
    ]);
  });

  it('finalizes a large hour (more fields than one Lua unpack can take)', async () => {
    const { token } = await store.claim(p);
    const events = Array.from({ length: 6000 }, (_, i) => ({
      field: aggregateField(`c${i}`, 'calls'),
      op: 's' as const,
      ids: [`e${i}`],
      micros: [1_000_000],
    }));
    await apply(token, offsets(0, 5999), [{ hourMs: H0, targetMs: H0, aggregates: events }]);
    const records = await finalizer.finalize(store, p, token, H0);
    expect(records).toHaveLength(6000);
    expect(records.every((r) => r.quantity === 1)).toBe(true);
  });
});
