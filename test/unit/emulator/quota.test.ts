/** The TPS quota and the fault draws without HTTP: an injected clock makes the rate claims exact. */
import { describe, expect, it } from 'vitest';
import { FaultInjector, NO_FAULTS, parseFaultUpdate } from '../../../src/emulator/faults.ts';
import { RequestQuota } from '../../../src/emulator/quota.ts';
import { EmulatorState } from '../../../src/emulator/state.ts';
import { ConfigError } from '../../../src/errors.ts';
import { ACCOUNT, LICENSE, NOW } from '../../support/emulator.ts';

/** Sends `count` requests at `arrivals(i)` ms and returns how many the quota refused. */
function refused(
  quota: RequestQuota,
  setClock: (ms: number) => void,
  count: number,
  at: (i: number) => number,
) {
  let n = 0;
  for (let i = 0; i < count; i++) {
    setClock(at(i));
    if (!quota.tryTake('BatchMeterUsage')) n += 1;
  }
  return n;
}

describe('RequestQuota (token bucket)', () => {
  it('lets one second of calls through at once, then one more per 1/tps seconds', () => {
    let t = 0;
    const quota = new RequestQuota(10, () => t);
    const admitted = Array.from({ length: 30 }, () => quota.tryTake('BatchMeterUsage')).filter(Boolean);
    expect(admitted).toHaveLength(10);
    t = 99;
    expect(quota.tryTake('BatchMeterUsage')).toBe(false);
    t = 100;
    expect(quota.tryTake('BatchMeterUsage')).toBe(true);
    expect(quota.tryTake('BatchMeterUsage')).toBe(false);
  });

  it('never throttles a client paced at the quota, even when arrivals jitter by ±45 ms', () => {
    let t = 0;
    const quota = new RequestQuota(10, () => t);
    const jitter = (i: number) => ((i * 7919) % 91) - 45; // deterministic, spread over [-45, 45]
    expect(
      refused(
        quota,
        (ms) => (t = ms),
        600,
        (i) => 1000 + i * 100 + jitter(i),
      ),
    ).toBe(0);
  });

  it('throttles about half of a client at twice the quota', () => {
    let t = 0;
    const quota = new RequestQuota(10, () => t);
    // 20/s for 20 s: the first second's burst, then exactly 10/s get through.
    const n = refused(
      quota,
      (ms) => (t = ms),
      400,
      (i) => i * 50,
    );
    expect(n / 400).toBeGreaterThan(0.45);
    expect(n / 400).toBeLessThanOrEqual(0.5);
  });

  it('keeps a separate bucket per operation, and tps 0 turns it off', () => {
    const t = 0;
    const quota = new RequestQuota(2, () => t);
    expect([1, 2, 3].map(() => quota.tryTake('BatchMeterUsage'))).toEqual([true, true, false]);
    expect(quota.tryTake('MeterUsage')).toBe(true);
    quota.tps = 0;
    expect(Array.from({ length: 100 }, () => quota.tryTake('BatchMeterUsage')).every(Boolean)).toBe(true);
    quota.tps = 1; // a new quota starts full
    expect([1, 2].map(() => quota.tryTake('BatchMeterUsage'))).toEqual([true, false]);
  });

  it('rejects a negative or non-finite tps', () => {
    expect(() => new RequestQuota(-1)).toThrow(RangeError);
    expect(() => new RequestQuota(Number.NaN)).toThrow(/tps must be/);
  });
});

describe('FaultInjector', () => {
  it('injects each fault at its rate, and the same seed gives the same sequence', () => {
    const settings = {
      seed: 1234,
      throttleRate: 0.2,
      errorRate: 0.1,
      timeoutRate: 0.05,
      unprocessedRate: 0.3,
    };
    const a = new FaultInjector(settings);
    const picks = Array.from({ length: 10_000 }, () => a.pick());
    const share = (f: string) => picks.filter((p) => p === f).length / picks.length;
    expect(share('throttling')).toBeCloseTo(0.2, 1);
    expect(share('internalError')).toBeCloseTo(0.1, 1);
    expect(share('timeout')).toBeCloseTo(0.05, 1);
    const unprocessed = Array.from({ length: 10_000 }, () => a.leaveUnprocessed()).filter(Boolean).length;
    expect(unprocessed / 10_000).toBeCloseTo(0.3, 1);
    expect(a.counts).toMatchObject({
      throttling: picks.filter((p) => p === 'throttling').length,
      internalError: picks.filter((p) => p === 'internalError').length,
      timeout: picks.filter((p) => p === 'timeout').length,
      unprocessedRecords: unprocessed,
    });

    const b = new FaultInjector(settings);
    expect(Array.from({ length: 10_000 }, () => b.pick())).toEqual(picks);
    b.configure({ seed: 1234 }); // giving the seed again restarts the sequence
    expect(Array.from({ length: 100 }, () => b.pick())).toEqual(picks.slice(0, 100));
  });

  it('adds latency with jitter inside [latencyMs, latencyMs + latencyJitterMs]', () => {
    const injector = new FaultInjector({ seed: 1, latencyMs: 20, latencyJitterMs: 10 });
    const draws = Array.from({ length: 1000 }, () => injector.latency());
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(20);
    expect(Math.max(...draws)).toBeLessThan(30);
    expect(new Set(draws).size).toBeGreaterThan(900);
    expect(injector.counts.delayed).toBe(1000);
    expect(new FaultInjector().latency()).toBe(0);
  });

  it('lists every invalid setting at once and applies none of them', () => {
    const injector = new FaultInjector({ errorRate: 0.5 });
    let error: unknown;
    try {
      injector.configure({ errorRate: 2, latencyMs: -1, timeoutMs: 0, seed: 1.5, nope: 1 } as object);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toEqual([
      'errorRate must be a number from 0 to 1 (got 2)',
      'latencyMs must be a number of ms from 0 to 2147483647 (got -1)',
      'timeoutMs must be a number of ms from 1 to 2147483647 (got 0)',
      'seed must be an integer from 0 to 4294967295, or null (got 1.5)',
      expect.stringMatching(/^nope is not a fault setting/),
    ]);
    expect(() => injector.configure({ throttleRate: 0.4, timeoutRate: 0.2 })).toThrow(
      /throttleRate \+ errorRate \+ timeoutRate must be at most 1/,
    );
    expect(injector.settings).toEqual({ ...NO_FAULTS, errorRate: 0.5 });
    // Rates that add up to 1 only up to float rounding are fine; `undefined` means "not given".
    injector.configure({ throttleRate: 0.1, errorRate: 0.2, timeoutRate: 0.7, latencyMs: undefined });
    expect(injector.settings).toMatchObject({
      throttleRate: 0.1,
      errorRate: 0.2,
      timeoutRate: 0.7,
      latencyMs: 0,
    });
    expect(() => parseFaultUpdate([], NO_FAULTS)).toThrow(/must be a JSON object/);
    expect(() => parseFaultUpdate({ tps: -1 }, NO_FAULTS)).toThrow(/tps must be a non-negative number/);
  });
});

describe('EmulatorState quota and fault settings', () => {
  const record = (dimension: string) => ({
    Timestamp: NOW / 1000,
    CustomerAWSAccountId: ACCOUNT,
    LicenseArn: LICENSE,
    Dimension: dimension,
    Quantity: 1,
  });

  it('counts quota refusals per operation and unprocessed records; reset clears counts, not settings', () => {
    const state = new EmulatorState({
      now: () => NOW,
      customers: [ACCOUNT],
      tps: 1,
      quotaClock: () => 0,
      faults: { unprocessedRate: 1 },
    });
    expect([1, 2, 3].map(() => state.admit('MeterUsage'))).toEqual([true, false, false]);
    const out = state.batchMeterUsage({ UsageRecords: [record('a'), record('b')] });
    expect(out.UnprocessedRecords).toHaveLength(2);
    expect(state.snapshot()).toMatchObject({
      throttled: { MeterUsage: 2 },
      injected: { unprocessedRecords: 2 },
    });

    state.reset();
    expect(state.snapshot()).toMatchObject({ throttled: {}, injected: { unprocessedRecords: 0 } });
    expect(state.faultSettings()).toMatchObject({ tps: 1, unprocessedRate: 1 });
    expect(state.admit('MeterUsage')).toBe(true); // reset refills the buckets too
  });

  it('keeps the hooks object by reference beside the rates, and the hook decides first', () => {
    const hooks = { unprocessedRate: 0, leaveUnprocessed: (r: { Dimension: string }) => r.Dimension === 'x' };
    const state = new EmulatorState({ now: () => NOW, customers: [ACCOUNT], faults: hooks });
    expect(state.faults).toBe(hooks);
    const out = state.batchMeterUsage({ UsageRecords: [record('x'), record('y')] });
    expect(out.UnprocessedRecords.map((r) => r.Dimension)).toEqual(['x']);
    expect(state.snapshot().injected.unprocessedRecords).toBe(0); // hook-made, not rate-made
  });
});
