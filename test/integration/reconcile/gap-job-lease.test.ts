/**
 * The gap job runs on every worker pod, but its scan of the ledger should run once per interval for the
 * whole fleet: two pods (two GapMonitors on one Redis and key prefix) check in turn, and only one of them
 * scans; when that pod stops, the other takes over once its lease lapses.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { GapMonitor } from '../../../src/reconcile/gaps.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { stackEnv, testLogger, uniqueId } from '../../support/harness.ts';
import { testPipeline } from '../../support/pipeline-env.ts';

describe('the gap job across worker pods', () => {
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(() => redis.disconnect());

  it('scans once per interval for the fleet, and another pod takes over when the scanning one stops', async () => {
    const tp = testPipeline(uniqueId('gap-lease'), {
      dimensions: [{ name: 'api_calls', zeroRecords: true }],
    });
    const config = tp.config(['worker']);
    const keys = new Keys(tp.run);
    const pod = () => new GapMonitor({ config, redis, keys, logger: testLogger(), intervalMs: 60_000 });
    const [a, b] = [pod(), pod()];
    const first = [await a.tick(), await b.tick()];
    // One of the two scanned (an array of rows, empty here), the other left it to it.
    expect(first.filter((r) => r !== undefined)).toHaveLength(1);
    const scanner = first[0] !== undefined ? a : b;
    const other = scanner === a ? b : a;
    // The next interval: the same pod again.
    expect(await scanner.tick()).toBeDefined();
    expect(await other.tick()).toBeUndefined();
    // The scanning pod stops: its lease goes with it, and the other scans from its next tick.
    await scanner.stop();
    expect(await other.tick()).toBeDefined();
    await other.stop();
    expect(await redis.exists(keys.gapJobLease())).toBe(0);
  });
});
