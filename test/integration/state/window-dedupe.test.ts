/**
 * Dedupe by the in-memory index and the packed logs in Redis, on a real Redis: an id counted before a
 * restart is refused after it (the index restored from Redis), an id that landed without the task
 * knowing (a lost reply) is refused once the index catches up, a zombie's batch leaves no id behind, a
 * wipe forgets every id (the replay counts them again), and the logs keep the dedupe ttl. An upgrade from
 * the dedupe sets kept before the logs: ids counted before it are still refused after it.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { createRedis } from '../../../src/redis/client.ts';
import { aggregateField, Keys } from '../../../src/redis/keys.ts';
import { WindowStore } from '../../../src/state/window-store.ts';
import type { HourGroup } from '../../../src/state/window-types.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { deleteKeys, stackEnv, uniqueId } from '../../support/harness.ts';

const redis = createRedis(stackEnv().redisUrl);
const H0 = Date.parse('2026-11-27T10:00:00Z');
const H1 = H0 + HOUR_MS;
const p = { topic: 'usage', partition: 3 };
const calls = aggregateField('acme', 'calls');
const TTL_MS = 48 * HOUR_MS;
let prefix: string;
const prefixes: string[] = [];

/** A store as a new process has it: nothing in memory. */
const newProcess = () =>
  new WindowStore(redis, new Keys(prefix), { dedupeTtlMs: TTL_MS, finalizedTtlMs: TTL_MS });
const group = (hourMs: number, events: [string, number][]): HourGroup => ({
  hourMs,
  targetMs: hourMs,
  aggregates: [{ field: calls, op: 's', ids: events.map(([id]) => id), micros: events.map(([, m]) => m) }],
});
const apply = (
  store: WindowStore,
  token: string,
  after: string | undefined,
  last: string,
  groups: HourGroup[],
) =>
  store.applyBatch(p, token, {
    offsets: { after, last },
    groups,
    maxEventTimeMs: H1,
    nowMs: H1 + 60_000,
  });
const total = async (hourMs: number) => redis.hget(new Keys(prefix).partition(p).aggregates(hourMs), calls);

beforeEach(() => {
  prefix = uniqueId('dd');
  prefixes.push(prefix);
});
afterAll(async () => {
  for (const used of prefixes) await deleteKeys(used);
  redis.disconnect();
});

describe('dedupe across processes and failures', () => {
  it('refuses, after an upgrade, an id the previous version counted in its dedupe set', async () => {
    // What a processor before the packed logs left: the partition claimed, its checkpoint, hour H0's
    // total and its dedupe set of id strings, with the set's ttl running.
    const k = new Keys(prefix).partition(p);
    await redis.set(k.fence(), '7');
    await redis.set(k.checkpoint(), '1');
    await redis.hset(k.aggregates(H0), calls, '3');
    const old = Array.from({ length: 4_500 }, (_, i) => `old-${i}`);
    await redis.sadd(k.seen(H0), ...old);
    await redis.pexpire(k.seen(H0), TTL_MS - HOUR_MS);

    const upgraded = newProcess();
    const a = await upgraded.claim(p);
    expect(a.checkpoint).toBe('1');
    // A producer resends two ids counted before the upgrade, with one new event.
    expect(
      await apply(upgraded, a.token, '1', '3', [
        group(H0, [
          ['old-17', 1],
          ['old-4499', 1],
          ['new-1', 5],
        ]),
      ]),
    ).toEqual({ applied: 1, duplicates: 2, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('8');
    // The ids moved into the log, which keeps the set's remaining ttl; the set is gone.
    expect(await redis.exists(k.seen(H0))).toBe(0);
    const ttl = await redis.pttl(k.dedupeLog(H0));
    expect(ttl).toBeGreaterThan(TTL_MS - 2 * HOUR_MS);
    expect(ttl).toBeLessThanOrEqual(TTL_MS);
    // And a process after that one refuses them from the log alone.
    const next = newProcess();
    const b = await next.claim(p);
    expect(
      await apply(next, b.token, '3', '4', [
        group(H0, [
          ['old-0', 1],
          ['new-1', 5],
          ['new-2', 2],
        ]),
      ]),
    ).toEqual({ applied: 1, duplicates: 2, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('10');
  });

  it('refuses an id counted before a restart: the new owner restores the index from Redis', async () => {
    const first = newProcess();
    const a = await first.claim(p);
    expect(
      await apply(first, a.token, undefined, '1', [
        group(H0, [
          ['e1', 1],
          ['e2', 2],
        ]),
        group(H1, [['e1', 4]]),
      ]),
    ).toEqual({ applied: 3, duplicates: 0, carried: 0, counted: 0 });

    const second = newProcess();
    const b = await second.claim(p);
    expect(b.checkpoint).toBe('1');
    expect(
      await apply(second, b.token, '1', '3', [
        group(H0, [
          ['e2', 2],
          ['e3', 8],
        ]),
        group(H1, [['e1', 4]]),
      ]),
    ).toEqual({ applied: 1, duplicates: 2, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('11');
    expect(await total(H1)).toBe('4');
  });

  it('refuses an id whose batch landed without the task knowing (a lost reply), once Redis says so', async () => {
    const task = newProcess();
    const { token } = await task.claim(p);
    await apply(task, token, undefined, '0', [group(H0, [['e1', 1]])]);
    // The same owner's batch 1..1 landed, but its reply never reached the task's index.
    const landedUnseen = newProcess();
    await apply(landedUnseen, token, '0', '1', [group(H0, [['e2', 2]])]);
    await expect(apply(task, token, '0', '2', [group(H0, [['e2', 2]])])).rejects.toMatchObject({
      code: 'stale_batch',
      context: { checkpoint: '1' },
    });
    // What follows Redis's checkpoint: e2 again (a producer's resend) and a new e3.
    expect(
      await apply(task, token, '1', '3', [
        group(H0, [
          ['e2', 2],
          ['e3', 4],
        ]),
      ]),
    ).toEqual({ applied: 1, duplicates: 1, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('7');
  });

  it("keeps no id of a zombie's refused batch: the owner counts it", async () => {
    const zombie = newProcess();
    const z = await zombie.claim(p);
    await apply(zombie, z.token, undefined, '0', [group(H0, [['e1', 1]])]);
    const owner = newProcess();
    const o = await owner.claim(p);
    await expect(apply(zombie, z.token, '0', '1', [group(H0, [['e2', 2]])])).rejects.toMatchObject({
      code: 'fenced',
    });
    expect(await apply(owner, o.token, '0', '1', [group(H0, [['e2', 2]])])).toEqual({
      applied: 1,
      duplicates: 0,
      carried: 0,
      counted: 0,
    });
    expect(await total(H0)).toBe('3');
  });

  it('forgets every id when Redis loses the partition: the replay counts them again', async () => {
    const task = newProcess();
    const { token } = await task.claim(p);
    await apply(task, token, undefined, '1', [
      group(H0, [
        ['e1', 1],
        ['e2', 2],
      ]),
    ]);
    await deleteKeys(prefix);
    await expect(apply(task, token, '1', '2', [group(H0, [['e3', 4]])])).rejects.toMatchObject({
      code: 'state_lost',
    });
    const again = await task.claim(p);
    expect(
      await apply(task, again.token, undefined, '2', [
        group(H0, [
          ['e1', 1],
          ['e2', 2],
          ['e3', 4],
        ]),
      ]),
    ).toEqual({ applied: 3, duplicates: 0, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('7');
  });

  it('keeps each hour log for the dedupe ttl after its last batch, listed in the hours index', async () => {
    const task = newProcess();
    const { token } = await task.claim(p);
    await apply(task, token, undefined, '0', [group(H0, [['e1', 1]])]);
    const k = new Keys(prefix).partition(p);
    expect((await redis.lrangeBuffer(k.dedupeLog(H0), 0, -1)).map((e) => e.length)).toEqual([16]);
    const ttl = await redis.ttl(k.dedupeLog(H0));
    expect(ttl).toBeGreaterThan(TTL_MS / 1000 - 60);
    expect(ttl).toBeLessThanOrEqual(TTL_MS / 1000);
    expect(await redis.zrange(k.dedupeHours(), '0', '-1')).toEqual([String(H0)]);
    // A batch of duplicates only still renews the ttl, and adds nothing.
    expect(await apply(task, token, '0', '1', [group(H0, [['e1', 1]])])).toMatchObject({ duplicates: 1 });
    expect(await redis.llen(k.dedupeLog(H0))).toBe(1);
  });
});

describe('the index of a closed task', () => {
  it('is released when its task closes, and a closing older task leaves the new owner its index', async () => {
    const store = newProcess();
    const old = await store.claim(p);
    await apply(store, old.token, undefined, '0', [group(H0, [['e1', 1]])]);
    // The partition comes back to this process: a new task claims it before the old one has closed.
    const current = await store.claim(p);
    await apply(store, current.token, '0', '1', [group(H0, [['e2', 2]])]);
    store.dedupe.release(p, old.token);
    expect(store.dedupe.holds(p)).toBe(true);
    store.dedupe.release(p, current.token);
    expect(store.dedupe.holds(p)).toBe(false);
  });
});

describe('an index over its memory budget', () => {
  it('spills to disk and still refuses every counted id, before and after a new claim restores it', async () => {
    const spillDir = mkdtempSync(path.join(os.tmpdir(), 'dd-spill-'));
    // The budget is the subject here: 20,000 hashes in memory for 50,000 counted.
    const budgeted = () =>
      new WindowStore(redis, new Keys(prefix), {
        dedupeTtlMs: TTL_MS,
        finalizedTtlMs: TTL_MS,
        dedupeMemory: { hotIds: 20_000, spillDir },
      });
    const ids = (from: number, n: number, step = 1): [string, number][] =>
      Array.from({ length: n }, (_, i) => [`e-${from + i * step}`, 1]);
    const first = budgeted();
    const a = await first.claim(p);
    let offset = 0;
    for (let b = 0; b < 10; b++) {
      const res = await apply(first, a.token, offset ? String(offset) : undefined, String(offset + 1), [
        group(H0, ids(b * 5_000, 5_000)),
      ]);
      expect(res.applied).toBe(5_000);
      offset += 1;
    }
    const index = await first.dedupe.ready(p, a.token, H1 + 60_000);
    expect(index.size).toBe(50_000);
    expect(index.hotSize).toBeLessThanOrEqual(20_000);
    expect(readdirSync(spillDir)).toHaveLength(1);

    // Resends from across the whole range (most of them spilled) and 100 new events.
    const resend = [...ids(0, 5_000, 10), ...ids(100_000, 100)];
    expect(await apply(first, a.token, String(offset), String(offset + 1), [group(H0, resend)])).toEqual({
      applied: 100,
      duplicates: 5_000,
      carried: 0,
      counted: 0,
    });
    offset += 1;
    expect(await total(H0)).toBe('50100');

    // A new owner restores 50,100 ids into the same budget, and refuses them all.
    const second = budgeted();
    const b = await second.claim(p);
    expect(
      await apply(second, b.token, String(offset), String(offset + 1), [
        group(H0, [...resend, ...ids(49_990, 10), ['e-new', 1]]),
      ]),
    ).toEqual({ applied: 1, duplicates: 5_110, carried: 0, counted: 0 });
    expect(await total(H0)).toBe('50101');
    const restored = await second.dedupe.ready(p, b.token, H1 + 60_000);
    expect(restored.size).toBe(50_101);
    expect(restored.hotSize).toBeLessThanOrEqual(20_000);

    // Closing drops the spilled files.
    first.dedupe.close();
    second.dedupe.close();
    expect(readdirSync(spillDir)).toEqual([]);
    rmSync(spillDir, { recursive: true, force: true });
  });
});
