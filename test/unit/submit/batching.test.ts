import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../../src/metering/backoff.ts';
import { chunkForBatchMeterUsage, MAX_RECORDS_PER_CALL } from '../../../src/submit/batching.ts';

const records = (n: number, product = 'prod-a') =>
  Array.from({ length: n }, (_, i) => ({ id: i, productCode: product, form: 'account' }));
const key = (r: { productCode: string; form: string }) => `${r.productCode}|${r.form}`;

describe('BatchMeterUsage batching', () => {
  it('splits 26 records into 2 calls of 25 and 1', () => {
    const calls = chunkForBatchMeterUsage(records(26), key);
    expect(calls.map((c) => c.length)).toEqual([25, 1]);
    expect(calls.flat().map((r) => r.id)).toEqual(records(26).map((r) => r.id));
  });

  it('fills calls up to 25 exactly', () => {
    expect(chunkForBatchMeterUsage(records(50), key).map((c) => c.length)).toEqual([25, 25]);
    expect(chunkForBatchMeterUsage(records(25), key)).toHaveLength(1);
    expect(chunkForBatchMeterUsage([], key)).toEqual([]);
  });

  it('never mixes products or identifier forms in one call', () => {
    const mixed = [
      ...records(3, 'prod-a'),
      ...records(2, 'prod-b'),
      { id: 99, productCode: 'prod-a', form: 'legacy' },
    ];
    const calls = chunkForBatchMeterUsage(mixed, key);
    expect(calls).toHaveLength(3);
    for (const call of calls) expect(new Set(call.map(key)).size).toBe(1);
  });

  it('keeps each call under 1 MB', () => {
    const big = records(25);
    const calls = chunkForBatchMeterUsage(big, key, () => 100_000);
    expect(calls.length).toBeGreaterThan(2);
    for (const call of calls) expect(call.length * 100_000).toBeLessThan(1_000_000);
    expect(Math.max(...calls.map((c) => c.length))).toBeLessThanOrEqual(MAX_RECORDS_PER_CALL);
  });
});

describe('backoff with full jitter', () => {
  it('grows exponentially, is capped, and spans zero to the cap', () => {
    const opts = { baseMs: 100, maxMs: 5_000 };
    expect(backoffDelay(0, opts, () => 0.999)).toBe(99);
    expect(backoffDelay(3, opts, () => 0.999)).toBe(799);
    expect(backoffDelay(20, opts, () => 0.999)).toBe(4_995);
    expect(backoffDelay(20, opts, () => 0)).toBe(0);
  });
});
