/**
 * The metering models, property-tested: for any sequence of hourly usage, what is billed adds up to what
 * was measured (hourly), to the month's peak (monthly), or to the usage above the entitlement (contract);
 * no quantity is negative or above AWS's limit, and nothing above the limit is lost.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyModel,
  contractPeriod,
  decodeState,
  divRound,
  encodeState,
  type HourInput,
  MAX_AWS_QUANTITY,
  type ModelState,
} from '../../../src/commit/metering-models.ts';
import type { Rounding } from '../../../src/config/plan.ts';
import { allocate, MAX_ALLOCATIONS } from '../../../src/metering/allocations.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';

const CAP = BigInt(MAX_AWS_QUANTITY);
const rounding = fc.constantFrom<Rounding>('floor', 'ceil', 'round');
/** Micro-units per billed unit: a thousandth, 1 unit, 1000 units, and bytes → GiB (below AWS's cap; the cap has its own test). */
const unitMicros = fc.constantFrom(1000n, 1_000_000n, 1_000_000_000n, 1_073_741_824_000_000n);
/** An hour's usage in micro-units, or no usage at all. */
const hourUsage = fc.option(fc.bigInt({ min: 0n, max: 5_000_000_000n }), { nil: undefined });
const START = Date.parse('2026-10-01T00:00:00Z');

type Dim = HourInput['dimension'];

/** Runs a model over consecutive hours, threading its state (through its Redis encoding). */
function run(
  dimension: Dim,
  usages: readonly (bigint | undefined)[],
  contract?: (hourMs: number) => HourInput['contract'],
): { quantities: (number | undefined)[]; state: ModelState } {
  let state: ModelState = {};
  const quantities: (number | undefined)[] = [];
  usages.forEach((usage, i) => {
    const hourMs = START + i * HOUR_MS;
    const c = contract?.(hourMs);
    const out = applyModel({ hourMs, dimension, usage, state, ...(c ? { contract: c } : {}) });
    quantities.push(out.quantity);
    state = decodeState(encodeState(out.state));
  });
  return { quantities, state };
}

const billed = (qs: readonly (number | undefined)[]) => qs.reduce<bigint>((s, q) => s + BigInt(q ?? 0), 0n);

function checkQuantities(qs: readonly (number | undefined)[]): void {
  for (const q of qs) {
    if (q === undefined) continue;
    expect(Number.isInteger(q)).toBe(true);
    expect(q).toBeGreaterThanOrEqual(0);
    expect(q).toBeLessThanOrEqual(MAX_AWS_QUANTITY);
  }
}

describe('divRound', () => {
  it('rounds exact integer quotients the three ways, for negative numerators too', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }),
        fc.bigInt({ min: 1n, max: 10n ** 7n }),
        (n, d) => {
          const f = divRound(n, d, 'floor');
          expect(f * d <= n && n < (f + 1n) * d).toBe(true);
          const c = divRound(n, d, 'ceil');
          expect((c - 1n) * d < n && n <= c * d).toBe(true);
          const r = divRound(n, d, 'round');
          expect(2n * (n - r * d) >= -d && 2n * (n - r * d) < d).toBe(true);
        },
      ),
    );
  });
});

describe('hourly model', () => {
  it('sum: what is billed equals what was measured within one unit, over any span', () => {
    fc.assert(
      fc.property(
        unitMicros,
        rounding,
        fc.boolean(),
        fc.array(hourUsage, { maxLength: 60 }),
        (u, r, zero, usages) => {
          const dim: Dim = {
            model: 'hourly',
            aggregation: 'sum',
            rounding: r,
            unitMicros: u,
            zeroRecords: zero,
          };
          const { quantities, state } = run(dim, usages);
          checkQuantities(quantities);
          const measured = usages.reduce<bigint>((s, x) => s + (x ?? 0n), 0n);
          const diff = billed(quantities) * u - measured;
          expect(diff < u && diff > -u).toBe(true);
          // The carry is exactly the difference: nothing is lost or made up.
          expect(-diff).toBe(state.carry ?? 0n);
          usages.forEach((x, i) => {
            // One record for every hour with usage, and for every hour when zero records are on.
            if (x !== undefined || zero) expect(quantities[i]).toBeDefined();
          });
        },
      ),
    );
  });

  it('sum: a quantity above the AWS limit is capped and the excess billed in the next hours, never dropped', () => {
    fc.assert(
      fc.property(
        fc.array(fc.bigInt({ min: 0n, max: 3n * CAP }), { minLength: 1, maxLength: 6 }),
        (units) => {
          const dim: Dim = {
            model: 'hourly',
            aggregation: 'sum',
            rounding: 'floor',
            unitMicros: 1_000_000n,
            zeroRecords: false,
          };
          // Enough quiet hours afterwards for the held excess to drain.
          const usages = [
            ...units.map((x) => x * 1_000_000n),
            ...Array<undefined>(units.length * 3).fill(undefined),
          ];
          const { quantities, state } = run(dim, usages);
          checkQuantities(quantities);
          expect(billed(quantities)).toBe(units.reduce((s, x) => s + x, 0n));
          expect(state).toEqual({});
        },
      ),
    );
  });

  it('max: each hour bills its own rounded peak, with no carry between hours', () => {
    fc.assert(
      fc.property(unitMicros, rounding, fc.array(hourUsage, { maxLength: 30 }), (u, r, usages) => {
        const dim: Dim = {
          model: 'hourly',
          aggregation: 'max',
          rounding: r,
          unitMicros: u,
          zeroRecords: false,
        };
        const { quantities } = run(dim, usages);
        usages.forEach((x, i) => {
          expect(quantities[i]).toBe(x === undefined ? undefined : Number(divRound(x, u, r)));
        });
      }),
    );
  });
});

describe('monthly model (high-water mark)', () => {
  it('the increments of a month add up to its peak, and start over each month', () => {
    // Up to 10 days from Oct 1 with one hour in every 8: crosses into November sometimes.
    fc.assert(
      fc.property(
        unitMicros,
        rounding,
        fc.boolean(),
        fc.array(hourUsage, { maxLength: 800 }),
        (u, r, zero, sparse) => {
          const dim: Dim = {
            model: 'monthly',
            aggregation: 'max',
            rounding: r,
            unitMicros: u,
            zeroRecords: zero,
          };
          const usages = sparse.flatMap((x) => [x, ...Array<undefined>(7).fill(undefined)]);
          const { quantities } = run(dim, usages);
          checkQuantities(quantities);
          const months = new Map<string, { peak: bigint; billed: bigint; records: number }>();
          usages.forEach((x, i) => {
            const month = new Date(START + i * HOUR_MS).toISOString().slice(0, 7);
            const m = months.get(month) ?? { peak: 0n, billed: 0n, records: 0 };
            if (x !== undefined && x > m.peak) m.peak = x;
            m.billed += BigInt(quantities[i] ?? 0);
            if (quantities[i] !== undefined) m.records += 1;
            months.set(month, m);
          });
          for (const m of months.values()) expect(m.billed).toBe(divRound(m.peak, u, r));
          // Without zero records, a record appears only in an hour that raised the peak.
          if (!zero) expect(quantities.every((q) => q === undefined || q > 0)).toBe(true);
        },
      ),
    );
  });

  it('resets at the month boundary (UTC)', () => {
    const dim: Dim = {
      model: 'monthly',
      aggregation: 'max',
      rounding: 'ceil',
      unitMicros: 1_000_000n,
      zeroRecords: false,
    };
    const h23 = Date.parse('2026-10-31T23:00:00Z');
    let state: ModelState = {};
    const out: (number | undefined)[] = [];
    for (const [i, seats] of [5n, 3n, 4n, 4n].entries()) {
      const r = applyModel({ hourMs: h23 + i * HOUR_MS, dimension: dim, usage: seats * 1_000_000n, state });
      out.push(r.quantity);
      state = r.state;
    }
    // October's peak 5; November starts over: 3, then +1, then no new high.
    expect(out).toEqual([5, 3, 1, undefined]);
  });
});

describe('contract model (overage above the entitlement)', () => {
  it('bills exactly the usage above the entitlement, per period', () => {
    fc.assert(
      fc.property(
        unitMicros,
        rounding,
        fc.bigInt({ min: 0n, max: 20_000_000_000n }),
        fc.array(hourUsage, { maxLength: 120 }),
        (u, r, entitlement, sparse) => {
          const dim: Dim = {
            model: 'contract',
            aggregation: 'sum',
            rounding: r,
            unitMicros: u,
            zeroRecords: false,
          };
          // A weekly "period" keeps several periods inside a short sequence.
          const usages = sparse.flatMap((x) => [x, ...Array<undefined>(5).fill(undefined)]);
          const period = (h: number) => String(Math.floor((h - START) / (7 * 24 * HOUR_MS)));
          const { quantities } = run(dim, usages, (h) => ({
            period: period(h),
            entitlementMicros: entitlement,
          }));
          checkQuantities(quantities);
          const periods = new Map<string, { usage: bigint; billed: bigint }>();
          usages.forEach((x, i) => {
            const p = periods.get(period(START + i * HOUR_MS)) ?? { usage: 0n, billed: 0n };
            p.usage += x ?? 0n;
            p.billed += BigInt(quantities[i] ?? 0);
            periods.set(period(START + i * HOUR_MS), p);
          });
          for (const p of periods.values()) {
            const over = p.usage - entitlement;
            expect(p.billed).toBe(over > 0n ? divRound(over, u, r) : 0n);
          }
        },
      ),
    );
  });
});

describe('contract model: entitlements that change (GetEntitlements refreshes)', () => {
  const dim: Dim = {
    model: 'contract',
    aggregation: 'sum',
    rounding: 'floor',
    unitMicros: 1_000_000n,
    zeroRecords: true,
  };
  const M = 1_000_000n;

  it('bills the overage above the entitlement in force when each hour closes, never a negative quantity', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.bigInt({ min: 0n, max: 200n }), fc.bigInt({ min: 0n, max: 300n })), {
          minLength: 1,
          maxLength: 60,
        }),
        (hours) => {
          // [usage, entitlement in force] per hour, in whole units; one period.
          const { quantities } = run(
            dim,
            hours.map(([u]) => u * M),
            (h) => ({ period: 'p', entitlementMicros: (hours[(h - START) / HOUR_MS]?.[1] ?? 0n) * M }),
          );
          checkQuantities(quantities);
          // Independently: what is due is the cumulative overage under the current entitlement, less
          // what was billed; an entitlement that grows bills nothing until usage passes it again.
          let cumulative = 0n;
          let paid = 0n;
          hours.forEach(([u, e], i) => {
            cumulative += u;
            const over = cumulative > e ? cumulative - e : 0n;
            const due = over > paid ? over - paid : 0n;
            paid += due;
            expect(BigInt(quantities[i] ?? 0)).toBe(due);
          });
        },
      ),
    );
  });

  it('closes a period with the entitlement it had: usage it covered is not billed when the next has none', () => {
    // Hours 0-1 under an entitlement of 100 (used 80); from hour 2 a new period (the entitlement expired) with none.
    const usages = [50n * M, 30n * M, 20n * M, 5n * M];
    const { quantities } = run(dim, usages, (h) =>
      h < START + 2 * HOUR_MS
        ? { period: 'a', entitlementMicros: 100n * M }
        : { period: 'b', entitlementMicros: 0n },
    );
    expect(quantities).toEqual([0, 0, 20, 5]);
  });
});

describe('contract periods', () => {
  it('repeat monthly from the start, clamping the day to short months', () => {
    const c = { start: '2026-01-31T00:00:00Z', period: 'month' as const };
    expect(contractPeriod(c, Date.parse('2026-01-31T05:00:00Z'))).toBe('2026-01-31T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2026-02-27T23:00:00Z'))).toBe('2026-01-31T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2026-02-28T00:00:00Z'))).toBe('2026-02-28T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2026-03-30T23:00:00Z'))).toBe('2026-02-28T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2026-03-31T00:00:00Z'))).toBe('2026-03-31T00:00:00.000Z');
  });

  it('repeat yearly, and hours before the start fall in the period before it', () => {
    const c = { start: '2026-07-01T00:00:00Z', period: 'year' as const };
    expect(contractPeriod(c, Date.parse('2027-06-30T23:00:00Z'))).toBe('2026-07-01T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2027-07-01T00:00:00Z'))).toBe('2027-07-01T00:00:00.000Z');
    expect(contractPeriod(c, Date.parse('2026-06-30T23:00:00Z'))).toBe('2025-07-01T00:00:00.000Z');
  });
});

describe('usage allocations', () => {
  // One part per distinct tag set (and at most one untagged), as the window store keeps them.
  const tagSets = fc.uniqueArray(
    fc.record({
      tags: fc.option(
        fc.dictionary(fc.constantFrom('team', 'env', 'app'), fc.stringMatching(/^[a-z]{1,4}$/)),
        {
          nil: undefined,
        },
      ),
      micros: fc.bigInt({ min: 0n, max: 10n ** 12n }),
    }),
    { maxLength: 40, selector: (p) => JSON.stringify(p.tags ? Object.entries(p.tags).sort() : null) },
  );

  it('split the quantity exactly, in non-negative integers, proportionally within one unit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_AWS_QUANTITY }), tagSets, (quantity, parts) => {
        const { allocations } = allocate(quantity, parts);
        if (!allocations) {
          expect(quantity === 0 || !parts.some((p) => p.tags)).toBe(true);
          return;
        }
        expect(allocations.reduce((s, a) => s + a.quantity, 0)).toBe(quantity);
        expect(allocations.every((a) => Number.isInteger(a.quantity) && a.quantity > 0)).toBe(true);
        const total = parts.reduce((s, p) => s + p.micros, 0n);
        if (total > 0n) {
          for (const a of allocations.filter((x) => x.tags)) {
            const share = parts.find((p) => JSON.stringify(p.tags) === JSON.stringify(a.tags))?.micros ?? 0n;
            const exact = (Number(share) / Number(total)) * quantity;
            expect(Math.abs(a.quantity - exact)).toBeLessThan(1.001);
          }
        }
      }),
    );
  });

  it(`merge tag sets beyond AWS's ${MAX_ALLOCATIONS} into untagged usage`, () => {
    const parts = Array.from({ length: MAX_ALLOCATIONS + 10 }, (_, i) => ({
      tags: { team: `t${i}` },
      micros: BigInt(1000 + i),
    }));
    const { allocations, merged } = allocate(10_000_000, parts);
    expect(merged).toBe(11);
    expect(allocations).toHaveLength(MAX_ALLOCATIONS);
    expect(allocations?.filter((a) => !a.tags)).toHaveLength(1);
    expect(allocations?.reduce((s, a) => s + a.quantity, 0)).toBe(10_000_000);
  });
});
