import { describe, expect, it } from 'vitest';
import { metrics, observeClockSkew } from '../../../src/observability/metrics.ts';

/** A sample's value by metric name and labels (`le` as prom-client exports it). */
async function sample(name: string, labels: Record<string, string | number>): Promise<number> {
  const all = [
    ...(await metrics.clockSkewAbsoluteSeconds.get()).values,
    ...(await metrics.clockSkewSeconds.get()).values,
  ] as { metricName?: string; labels: Record<string, string | number>; value: number }[];
  const found = all.find(
    (v) =>
      (v.metricName ?? 'meterline_clock_skew_seconds') === name &&
      Object.entries(labels).every(([k, x]) => String(v.labels[k]) === String(x)),
  );
  return found?.value ?? 0;
}

describe('clock skew metrics', () => {
  it('counts a producer clock running ahead under "ahead", an older event under "behind", and keeps the last signed skew', async () => {
    const h = 'meterline_clock_skew_absolute_seconds';
    const before = {
      ahead: await sample(`${h}_count`, { direction: 'ahead' }),
      aheadLe60: await sample(`${h}_bucket`, { direction: 'ahead', le: 60 }),
      aheadLe600: await sample(`${h}_bucket`, { direction: 'ahead', le: 600 }),
      behind: await sample(`${h}_count`, { direction: 'behind' }),
      behindLe10: await sample(`${h}_bucket`, { direction: 'behind', le: 10 }),
    };
    observeClockSkew(120);
    observeClockSkew(-5);
    expect(await sample(`${h}_count`, { direction: 'ahead' })).toBe(before.ahead + 1);
    expect(await sample(`${h}_bucket`, { direction: 'ahead', le: 60 })).toBe(before.aheadLe60);
    expect(await sample(`${h}_bucket`, { direction: 'ahead', le: 600 })).toBe(before.aheadLe600 + 1);
    expect(await sample(`${h}_count`, { direction: 'behind' })).toBe(before.behind + 1);
    expect(await sample(`${h}_bucket`, { direction: 'behind', le: 10 })).toBe(before.behindLe10 + 1);
    expect(await sample('meterline_clock_skew_seconds', {})).toBe(-5);
  });
});
