/**
 * A frozen hour's records on a real Redis: they have no TTL while the hour waits for its emit, the
 * finalized-hour TTL starts when it is marked emitted (and a repeated mark does not restart it), and an
 * hour frozen with a TTL (by an older version) is kept once its emit fails.
 */
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { HourFinalizer } from '../../../src/commit/hour-finalizer.ts';
import { parsePlan } from '../../../src/config/plan.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { aggregateField, Keys } from '../../../src/redis/keys.ts';
import { WindowStore } from '../../../src/state/window-store.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { deleteKeys, stackEnv, testLogger, uniqueId } from '../../support/harness.ts';

const redis = createRedis(stackEnv().redisUrl);
const H0 = Date.parse('2026-11-27T10:00:00Z');
const TTL_S = 48 * 3600;
const finalizer = new HourFinalizer({
  plan: parsePlan({ productCode: 'prod-t', dimensions: [{ name: 'calls' }] }),
  contractOf: () => undefined,
  logger: testLogger(),
});
const p = { topic: 'usage', partition: 0 };
const prefixes: string[] = [];
let keys: Keys;
let store: WindowStore;

beforeEach(() => {
  const prefix = uniqueId('frozen-ttl');
  prefixes.push(prefix);
  keys = new Keys(prefix);
  store = new WindowStore(redis, keys, { dedupeTtlMs: 48 * HOUR_MS, finalizedTtlMs: 48 * HOUR_MS });
});
afterAll(async () => {
  for (const used of prefixes) await deleteKeys(used);
  redis.disconnect();
});

/** Claims the partition and freezes H0 with one event of 3 units. */
async function frozenHour(): Promise<string> {
  const { token } = await store.claim(p);
  await store.applyBatch(p, token, {
    offsets: { after: undefined, last: '0' },
    groups: [
      {
        hourMs: H0,
        targetMs: H0,
        aggregates: [{ field: aggregateField('acme', 'calls'), op: 's', ids: ['a'], micros: [3_000_000] }],
      },
    ],
    maxEventTimeMs: H0,
    nowMs: H0 + HOUR_MS,
  });
  await finalizer.freeze(store, p, token, H0);
  return token;
}

describe('the frozen records of an hour', () => {
  it('never expire while the hour waits for its emit, and expire after the TTL once it is emitted', async () => {
    const token = await frozenHour();
    const fin = keys.partition(p).finalized(H0);
    expect(await store.pendingEmits(p)).toEqual([H0]);
    expect(await redis.ttl(fin)).toBe(-1);

    await store.markEmitted(p, token, H0);
    expect(await store.pendingEmits(p)).toEqual([]);
    const ttl = await redis.ttl(fin);
    expect(ttl).toBeGreaterThan(TTL_S - 60);
    expect(ttl).toBeLessThanOrEqual(TTL_S);
    // A second mark (a re-emission after a crash) leaves the running TTL alone.
    await redis.expire(fin, 600);
    await store.markEmitted(p, token, H0);
    expect(await redis.ttl(fin)).toBeLessThanOrEqual(600);
    expect(await finalizer.frozen(store, p, H0)).toEqual([
      { customer: 'acme', dimension: 'calls', productCode: 'prod-t', quantity: 3 },
    ]);
  });

  it('are kept when an hour frozen with a TTL (an older version) waits for its emit', async () => {
    await frozenHour();
    const fin = keys.partition(p).finalized(H0);
    await redis.expire(fin, TTL_S);
    expect(await store.keepFrozen(p, H0)).toBe(true);
    expect(await redis.ttl(fin)).toBe(-1);
    await redis.del(fin);
    expect(await store.keepFrozen(p, H0)).toBe(false);
  });
});
