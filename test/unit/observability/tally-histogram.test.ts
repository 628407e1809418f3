import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { TallyHistogram } from '../../../src/observability/tally-histogram.ts';

const DIRECTIONS = ['ahead', 'behind'] as const;
const BUCKETS = [1, 10, 60, 600, 3600, 21600, 86400];

describe('TallyHistogram', () => {
  it('exports exactly what prom-client’s Histogram exports for the same observations', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 1 }),
            fc.oneof(
              fc.constantFrom(0, 1, 10, 60, 86400, 86401),
              fc.double({ min: 0, max: 200_000, noNaN: true }),
            ),
          ),
          { maxLength: 200 },
        ),
        async (observations) => {
          const ours = new Registry();
          const theirs = new Registry();
          const tally = new TallyHistogram({
            name: 'skew',
            help: 'h',
            label: 'direction',
            values: DIRECTIONS,
            buckets: BUCKETS,
            registers: [ours],
          });
          const reference = new Histogram({
            name: 'skew',
            help: 'h',
            labelNames: ['direction'],
            buckets: BUCKETS,
            registers: [theirs],
          });
          // prom-client shows a label set only once observed: start both with every label value shown.
          for (const d of DIRECTIONS) reference.zero({ direction: d });
          for (const [i, v] of observations) {
            tally.observe(i, v);
            reference.observe({ direction: DIRECTIONS[i] as string }, v);
          }
          const lines = async (r: Registry) => (await r.metrics()).split('\n').sort();
          expect(await lines(ours)).toEqual(await lines(theirs));
        },
      ),
      { numRuns: 200 },
    );
  });
});
