/**
 * Finalizing hours on a real Redis, through the window store and the metering models: the month
 * boundary for each model, hourly zero records, allocations, and a model never applied twice.
 */
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { HourFinalizer } from '../../../src/commit/hour-finalizer.ts';
import type { Contract } from '../../../src/config/customers.ts';
import { parsePlan } from '../../../src/config/plan.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { aggregateField, Keys } from '../../../src/redis/keys.ts';
import { WindowStore } from '../../../src/state/window-store.ts';
import type { HourGroup } from '../../../src/state/window-types.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { deleteKeys, stackEnv, testLogger, uniqueId } from '../../support/harness.ts';

const redis = createRedis(stackEnv().redisUrl);
const p = { topic: 'usage', partition: 0 };
const plan = parsePlan({
  products: [
    {
      productCode: 'prod-a',
      dimensions: [
        { name: 'calls', zeroRecords: true },
        { name: 'seats', model: 'monthly', aggregation: 'max' },
      ],
    },
    {
      productCode: 'prod-b',
      dimensions: [
        { name: 'gb', model: 'contract', unit: 1000 },
        { name: 'bytes', unit: 1_073_741_824, rounding: 'ceil' },
      ],
    },
  ],
});
const contracts: Record<string, Contract> = {
  acme: { start: '2026-10-01T00:00:00Z', period: 'month', entitlements: { gb: 10 } },
};
const prefixes: string[] = [];
let store: WindowStore;
let finalizer: HourFinalizer;
let token: string;
let offset = 0;

/** Applies one event per entry as its own batch, at the next offset. */
async function usage(
  hourMs: number,
  events: [customer: string, dimension: string, units: number, tags?: Record<string, string>][],
) {
  const groups: HourGroup[] = [
    {
      hourMs,
      targetMs: hourMs,
      aggregates: events.map(([customer, dimension, units, tags]) => ({
        field: aggregateField(customer, dimension, tags),
        op: plan.dimensions.get(dimension)?.aggregation === 'max' ? ('m' as const) : ('s' as const),
        ids: [`e${offset}-${customer}-${dimension}-${JSON.stringify(tags ?? {})}`],
        micros: [Math.round(units * 1_000_000)],
      })),
    },
  ];
  await store.applyBatch(p, token, {
    offsets: { after: offset === 0 ? undefined : String(offset - 1), last: String(offset) },
    groups,
    maxEventTimeMs: hourMs,
    nowMs: hourMs,
  });
  offset += 1;
}

const quantities = async (hourMs: number, zeroFields: string[] = []) =>
  Object.fromEntries(
    (await finalizer.finalize(store, p, token, hourMs, zeroFields)).map((r) => [
      `${r.customer}/${r.dimension}`,
      r.quantity,
    ]),
  );

beforeEach(async () => {
  const prefix = uniqueId('fin');
  prefixes.push(prefix);
  store = new WindowStore(redis, new Keys(prefix), { dedupeTtlMs: 86_400_000, finalizedTtlMs: 86_400_000 });
  finalizer = new HourFinalizer({ plan, contractOf: (c) => contracts[c], logger: testLogger() });
  ({ token } = await store.claim(p));
  offset = 0;
});

afterAll(async () => {
  for (const prefix of prefixes) await deleteKeys(prefix);
  redis.disconnect();
});

describe('the month boundary (23:00 UTC on the last day to 01:00 on the 1st)', () => {
  const h22 = Date.parse('2026-10-31T22:00:00Z');
  const h23 = h22 + HOUR_MS;
  const h00 = h23 + HOUR_MS;
  const h01 = h00 + HOUR_MS;

  it('hourly: the sum carries its fraction across the boundary; the billed total stays exact', async () => {
    const got: Record<string, number>[] = [];
    for (const [h, units] of [
      [h23, 1.5],
      [h00, 2],
      [h01, 0.7],
    ] as const) {
      await usage(h, [['acme', 'calls', units]]);
      got.push(await quantities(h));
    }
    expect(got).toEqual([{ 'acme/calls': 1 }, { 'acme/calls': 2 }, { 'acme/calls': 1 }]);
  });

  it('monthly: October bills its peak; November starts over at its own peak', async () => {
    const got: Record<string, number>[] = [];
    for (const [h, seats] of [
      [h22, 4],
      [h23, 5],
      [h00, 3],
      [h01, 4],
    ] as const) {
      await usage(h, [['acme', 'seats', seats]]);
      got.push(await quantities(h));
    }
    expect(got).toEqual([{ 'acme/seats': 4 }, { 'acme/seats': 1 }, { 'acme/seats': 3 }, { 'acme/seats': 1 }]);
  });

  it('contract: only usage above the entitlement is billed, and the new period starts from zero', async () => {
    // Entitlement 10 (thousands of GB-units) a month; gb events are counted in units of 1/1000.
    const got: Record<string, number>[] = [];
    for (const [h, units] of [
      [h22, 8_000],
      [h23, 4_000],
      [h00, 6_000],
      [h01, 7_000],
    ] as const) {
      await usage(h, [['acme', 'gb', units]]);
      got.push(await quantities(h));
    }
    // Oct: 8 (no overage: no record), 12 → 2. Nov: 6 (none), 13 → 3.
    expect(got).toEqual([{}, { 'acme/gb': 2 }, {}, { 'acme/gb': 3 }]);
  });
});

describe('finalizing', () => {
  const h0 = Date.parse('2026-11-27T10:00:00Z');

  it('gives every subscribed customer one record per hour, 0 without usage', async () => {
    const zero = ['acme', 'globex', 'initech'].map((c) => aggregateField(c, 'calls'));
    const got: Record<string, number>[] = [];
    for (const h of [h0, h0 + HOUR_MS]) {
      await usage(h, [
        ['acme', 'calls', 3],
        ['globex', 'calls', 1],
      ]);
      got.push(await quantities(h, zero));
    }
    const expected = { 'acme/calls': 3, 'globex/calls': 1, 'initech/calls': 0 };
    expect(got).toEqual([expected, expected]);
  });

  it('converts units with the dimension rounding, and splits the quantity over tag sets', async () => {
    await usage(h0, [
      ['acme', 'bytes', 1_073_741_824 * 2.2, { team: 'a' }],
      ['acme', 'bytes', 1_073_741_824 * 1.1, { team: 'b' }],
      ['acme', 'bytes', 1_073_741_824 * 0.5],
    ]);
    const [record] = await finalizer.finalize(store, p, token, h0);
    // 3.8 GiB billed as 4 (ceil), split 2.2 : 1.1 : 0.5 by largest remainder.
    expect(record).toEqual({
      customer: 'acme',
      dimension: 'bytes',
      productCode: 'prod-b',
      quantity: 4,
      allocations: [
        { tags: { team: 'a' }, quantity: 2 },
        { tags: { team: 'b' }, quantity: 1 },
        { quantity: 1 },
      ],
    });
  });

  it('applies a model once, however often the hour is finalized', async () => {
    await usage(h0, [['acme', 'calls', 0.6]]);
    const first = await quantities(h0);
    const again = await quantities(h0);
    await usage(h0 + HOUR_MS, [['acme', 'calls', 0.6]]);
    // The 0.6 carried from h0 is added to h0+1 once: 1.2 → 1, not 1.8 → 1 with 0.8 left.
    expect([first, again, await quantities(h0 + HOUR_MS)]).toEqual([
      { 'acme/calls': 0 },
      { 'acme/calls': 0 },
      { 'acme/calls': 1 },
    ]);
    const k = new Keys(prefixes.at(-1) as string).partition(p);
    expect(await redis.hget(k.modelState(), aggregateField('acme', 'calls'))).toBe('{"carry":"200000"}');
  });

  it('bills units held back by the AWS cap in the next closed hour, even without usage', async () => {
    const big = 2_147_483_647 + 5;
    await usage(h0, [['acme', 'calls', big]]);
    expect(await quantities(h0)).toEqual({ 'acme/calls': 2_147_483_647 });
    // No usage for acme next hour (only globex): acme's 5 held units still get their record.
    await usage(h0 + HOUR_MS, [['globex', 'calls', 1]]);
    expect(await quantities(h0 + HOUR_MS)).toEqual({ 'acme/calls': 5, 'globex/calls': 1 });
    expect(finalizer.stats.heldBackUnits).toBe(5);
  });
});

describe('a Redis behind the task', () => {
  it('freezes nothing from it: the hour waits for the replay instead of closing from part of its usage', async () => {
    const h = Date.parse('2026-11-02T10:00:00Z');
    await usage(h, [['acme', 'calls', 2]]);
    await usage(h, [['acme', 'calls', 3]]);
    // The task applied through offset 5; this Redis (a replica promoted in a failover) holds offset 1.
    const held = 5n;
    await expect(finalizer.freeze(store, p, token, h, [], undefined, held)).rejects.toMatchObject({
      code: 'store_behind',
    });
    expect((await store.readHour(p, h, [])).finalized).toBe(false);
    // A Redis in step with the task freezes as before.
    expect(await finalizer.freeze(store, p, token, h, [], undefined, 1n)).toBe(1);
    expect(await quantities(h)).toEqual({ 'acme/calls': 5 });
  });
});
