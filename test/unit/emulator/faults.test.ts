/**
 * The TPS quota and rate-based faults as the real SDK v3 client sees them, and the admin API that
 * sets them. Rates are checked with a seed over hundreds of calls, within wide tolerances.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BatchMeterUsageCommand,
  InternalServiceErrorException,
  MarketplaceMeteringClient,
  MarketplaceMeteringServiceException,
  MeterUsageCommand,
  ThrottlingException,
} from '@aws-sdk/client-marketplace-metering';
import { afterEach, describe, expect, it } from 'vitest';
import type { FaultHooks } from '../../../src/emulator/emulator-types.ts';
import { NO_FAULTS } from '../../../src/emulator/faults.ts';
import {
  type RunningEmulator,
  type StartEmulatorOptions,
  startEmulator,
} from '../../../src/emulator/server.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import {
  ACCOUNT,
  accountRecord,
  CREDENTIALS,
  NOW,
  PRODUCT,
  rejection,
  sdkClient,
  snapshot,
} from '../../support/emulator.ts';

const HOUR_START = Date.UTC(2026, 10, 15, 11);

/** Emulators and clients a test opened; closed after it whatever happened. */
const opened: { emulators: RunningEmulator[]; clients: MarketplaceMeteringClient[] } = {
  emulators: [],
  clients: [],
};
afterEach(async () => {
  for (const c of opened.clients.splice(0)) c.destroy();
  await Promise.all(opened.emulators.splice(0).map((e) => e.close()));
});

async function emulator(options: StartEmulatorOptions = {}): Promise<RunningEmulator> {
  const e = await startEmulator({ now: () => NOW, customers: [ACCOUNT], ...options });
  opened.emulators.push(e);
  return e;
}

function client(url: string, requestHandler?: Record<string, unknown>): MarketplaceMeteringClient {
  const c = requestHandler
    ? new MarketplaceMeteringClient({
        endpoint: url,
        region: 'us-east-1',
        credentials: CREDENTIALS,
        maxAttempts: 1,
        requestHandler,
      })
    : sdkClient(url);
  opened.clients.push(c);
  return c;
}

const batch = (records = 1, dimension = 'api_calls') =>
  new BatchMeterUsageCommand({
    UsageRecords: Array.from({ length: records }, (_, i) =>
      accountRecord(HOUR_START, { Dimension: `${dimension}_${i}` }),
    ),
  });
const meter = (i = 0) =>
  new MeterUsageCommand({
    ProductCode: PRODUCT,
    Timestamp: new Date(HOUR_START),
    UsageDimension: `dim_${i}`,
    UsageQuantity: 1,
  });

/** What one call ended as, in words a test can count. */
async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return 'ok';
  } catch (error) {
    if (error instanceof ThrottlingException) return 'throttled';
    if (error instanceof InternalServiceErrorException) return 'internalError';
    if (error instanceof MarketplaceMeteringServiceException) return `service:${error.name}`;
    return `network:${(error as Error).name}`;
  }
}

const count = (outcomes: string[], what: string) => outcomes.filter((o) => o === what).length;

const admin = (url: string, body?: unknown) =>
  fetch(`${url}/_emulator/faults`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
const settings = async (url: string) =>
  (await (await admin(url)).json()) as ReturnType<RunningEmulator['state']['faultSettings']>;

describe('TPS quota', () => {
  it('answers calls past 10 at once with ThrottlingException, per API, and counts them', async () => {
    const e = await emulator({ tps: 10, quotaClock: () => 0 }); // a frozen quota clock: no refill at all
    const c = client(e.url);
    const outcomes = await Promise.all(Array.from({ length: 30 }, () => outcome(c.send(batch()))));
    expect(count(outcomes, 'ok')).toBe(10);
    expect(count(outcomes, 'throttled')).toBe(20);
    // MeterUsage has its own quota: the BatchMeterUsage burst did not spend it.
    expect(await Promise.all(Array.from({ length: 11 }, (_, i) => outcome(c.send(meter(i)))))).toEqual([
      ...Array(10).fill('ok'),
      'throttled',
    ]);
    const snap = await snapshot(e.url);
    expect(snap.throttled).toEqual({ BatchMeterUsage: 20, MeterUsage: 1 });
    expect(snap.errors).toEqual({ ThrottlingException: 21 });
    expect(snap.calls).toEqual({ BatchMeterUsage: 30, MeterUsage: 11 });
  });

  it('on the real clock lets through a burst of 30 only what 10/s allows while it arrives', async () => {
    const e = await emulator({ tps: 10 });
    const c = client(e.url);
    const started = performance.now();
    const outcomes = await Promise.all(Array.from({ length: 30 }, () => outcome(c.send(batch()))));
    const elapsedMs = performance.now() - started;
    expect(count(outcomes, 'ok') + count(outcomes, 'throttled')).toBe(30);
    expect(count(outcomes, 'ok')).toBeGreaterThanOrEqual(10);
    // One token comes back per 100 ms the burst took to arrive (usually a few ms: 10 or 11 succeed).
    expect(count(outcomes, 'ok')).toBeLessThanOrEqual(10 + Math.ceil(elapsedMs / 100));
    expect((await snapshot(e.url)).throttled.BatchMeterUsage).toBe(count(outcomes, 'throttled'));
  });

  it('never throttles a client paced at 10/s on each API (20 calls/s in all)', async () => {
    const e = await emulator({ tps: 10 });
    const c = client(e.url);
    // Load shape, not a wait for a condition: each stream sends at start + i × 100 ms.
    const paced = async (send: (i: number) => Promise<unknown>) => {
      const start = performance.now();
      const outcomes: string[] = [];
      for (let i = 0; i < 15; i++) {
        await sleep(Math.max(0, start + i * 100 - performance.now()));
        outcomes.push(await outcome(send(i)));
      }
      return outcomes;
    };
    const [batches, meters] = await Promise.all([
      paced(() => c.send(batch())),
      paced((i) => c.send(meter(i))),
    ]);
    expect([...batches, ...meters]).toEqual(Array(30).fill('ok'));
    expect((await snapshot(e.url)).throttled).toEqual({});
  });

  it('is off for startEmulator unless tps is given', async () => {
    const e = await emulator();
    const c = client(e.url);
    const outcomes = await Promise.all(Array.from({ length: 30 }, () => outcome(c.send(batch()))));
    expect(outcomes).toEqual(Array(30).fill('ok'));
    expect((await settings(e.url)).tps).toBe(0);
  });
});

describe('rate-based faults', () => {
  it('throttles, fails and leaves records unprocessed at the configured rates', async () => {
    const faults = { seed: 42, throttleRate: 0.2, errorRate: 0.1, unprocessedRate: 0.25 };
    const e = await emulator({ faults });
    const c = client(e.url);
    const outcomes: string[] = [];
    let processed = 0;
    let unprocessed = 0;
    for (let i = 0; i < 400; i++) {
      // Sequential, so the seeded draws happen in the same order on every run.
      const result = await outcome(
        c.send(batch(4)).then((out) => {
          processed += out.Results?.length ?? 0;
          unprocessed += out.UnprocessedRecords?.length ?? 0;
        }),
      );
      outcomes.push(result);
    }
    const share = (what: string) => count(outcomes, what) / outcomes.length;
    expect(share('throttled')).toBeGreaterThan(0.12);
    expect(share('throttled')).toBeLessThan(0.28);
    expect(share('internalError')).toBeGreaterThan(0.04);
    expect(share('internalError')).toBeLessThan(0.16);
    expect(share('ok')).toBeCloseTo(1 - share('throttled') - share('internalError'), 10);
    expect(unprocessed / (processed + unprocessed)).toBeGreaterThan(0.18);
    expect(unprocessed / (processed + unprocessed)).toBeLessThan(0.32);

    const snap = await snapshot(e.url);
    expect(snap.injected).toEqual({
      throttling: count(outcomes, 'throttled'),
      internalError: count(outcomes, 'internalError'),
      timeout: 0,
      unprocessedRecords: unprocessed,
      delayed: 0,
    });
    expect(snap.throttled).toEqual({}); // injected throttling is not the quota's

    // The same seed replays the same faults.
    await admin(e.url, { seed: 42 });
    const replay: string[] = [];
    for (let i = 0; i < 50; i++) replay.push(await outcome(c.send(batch(4))));
    expect(replay).toEqual(outcomes.slice(0, 50));
  });

  it('answers injected 5xx as InternalServiceErrorException with HTTP 500', async () => {
    const e = await emulator({ faults: { errorRate: 1 } });
    const error = await rejection(client(e.url).send(meter()));
    expect(error).toBeInstanceOf(InternalServiceErrorException);
    expect(error.$fault).toBe('server');
    expect((error.$metadata as { httpStatusCode?: number }).httpStatusCode).toBe(500);
    expect((await snapshot(e.url)).records).toEqual([]);
  });

  it('drops the connection of timed-out calls, at the configured rate', async () => {
    const e = await emulator({ faults: { seed: 7, timeoutRate: 0.3, timeoutMs: 5 } });
    const c = client(e.url);
    const outcomes: string[] = [];
    for (let i = 0; i < 100; i++) outcomes.push(await outcome(c.send(batch())));
    const dropped = outcomes.filter((o) => o.startsWith('network:'));
    expect(count(outcomes, 'ok') + dropped.length).toBe(100);
    expect(dropped.length).toBeGreaterThan(15);
    expect(dropped.length).toBeLessThan(45);
    expect((await snapshot(e.url)).injected.timeout).toBe(dropped.length);
  });

  it('surfaces a held call to the SDK as a TimeoutError when the client timeout is shorter', async () => {
    const e = await emulator({ faults: { timeoutRate: 1 } }); // held for the default 30 s
    expect(e.state.faultSettings().timeoutMs).toBe(30_000);
    const c = client(e.url, { requestTimeout: 200, throwOnRequestTimeout: true });
    const error = await rejection(c.send(batch()));
    expect(error.name).toBe('TimeoutError');
    expect(error).not.toBeInstanceOf(MarketplaceMeteringServiceException);
    const snap = await snapshot(e.url);
    expect(snap.records).toEqual([]); // a timeout fault never applies the call
    expect(snap.injected.timeout).toBe(1);
  });

  it('adds latency, and a client that gives up meanwhile still has its call applied', async () => {
    const e = await emulator({ faults: { latencyMs: 60 } });
    const started = performance.now();
    await client(e.url).send(batch());
    // Timers may fire up to ~1 ms early against performance.now.
    expect(performance.now() - started).toBeGreaterThanOrEqual(58);

    await admin(e.url, { latencyMs: 400 });
    const impatient = client(e.url, { requestTimeout: 100, throwOnRequestTimeout: true });
    expect((await rejection(impatient.send(batch(1, 'late')))).name).toBe('TimeoutError');
    const deadline = Date.now() + 10_000;
    while (!(await snapshot(e.url)).records.some((r) => r.dimension === 'late_0')) {
      if (Date.now() > deadline) throw new Error('the late call was never applied');
      await sleep(20);
    }
    expect((await snapshot(e.url)).injected.delayed).toBe(2);
  });

  it('keeps the FaultHooks seam: a hook swapped in later answers before the rates', async () => {
    const faults: FaultHooks = {};
    const e = await emulator({ faults: Object.assign(faults, { errorRate: 1 }) });
    faults.beforeOperation = () => ({
      kind: 'error',
      error: new ServiceError('ThrottlingException', 'hook'),
    });
    expect(await outcome(client(e.url).send(batch()))).toBe('throttled');
    faults.beforeOperation = undefined;
    expect(await outcome(client(e.url).send(batch()))).toBe('internalError');
    expect((await snapshot(e.url)).injected).toMatchObject({ throttling: 0, internalError: 1 });
  });
});

describe('admin API /_emulator/faults', () => {
  it('reads and merges settings, which take effect on the next call', async () => {
    const e = await emulator();
    expect(await settings(e.url)).toEqual({ ...NO_FAULTS, tps: 0 });
    const c = client(e.url);

    const res = await admin(e.url, { errorRate: 1, latencyMs: 1 });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ...NO_FAULTS, errorRate: 1, latencyMs: 1, tps: 0 });
    expect(await outcome(c.send(batch()))).toBe('internalError');

    // tps 0.1: one call, then nothing for ten seconds.
    await admin(e.url, { errorRate: 0, tps: 0.1 });
    expect(await settings(e.url)).toEqual({ ...NO_FAULTS, latencyMs: 1, tps: 0.1 });
    expect([await outcome(c.send(batch())), await outcome(c.send(batch()))]).toEqual(['ok', 'throttled']);

    // Reset forgets counters and spent quota, not the settings.
    await fetch(`${e.url}/_emulator/reset`, { method: 'POST' });
    const snap = await snapshot(e.url);
    expect(snap.throttled).toEqual({});
    expect(snap.injected).toMatchObject({ internalError: 0, delayed: 0 });
    expect((await settings(e.url)).tps).toBe(0.1);
    expect(await outcome(c.send(batch()))).toBe('ok');
  });

  it('rejects bad settings with 400 and a message per problem, applying none of them', async () => {
    const e = await emulator({ faults: { errorRate: 0.5 } });
    const before = await settings(e.url);
    const bad = async (body: string) => {
      const res = await fetch(`${e.url}/_emulator/faults`, { method: 'POST', body });
      expect(res.status).toBe(400);
      return (await res.json()) as { error: string; issues?: string[] };
    };
    expect((await bad(JSON.stringify({ throttleRate: 1.5, latencyMs: -5, tps: 'ten' }))).issues).toEqual([
      'throttleRate must be a number from 0 to 1 (got 1.5)',
      'latencyMs must be a number of ms from 0 to 2147483647 (got -5)',
      'tps must be a non-negative number of requests per second (0 = no quota) (got "ten")',
    ]);
    expect((await bad(JSON.stringify({ throttleRate: 0.6 }))).error).toMatch(
      /throttleRate \+ errorRate \+ timeoutRate must be at most 1 \(got 1\.1\)/,
    );
    expect((await bad(JSON.stringify({ errorRat: 0.1 }))).error).toMatch(/errorRat is not a fault setting/);
    expect((await bad('[0.1]')).error).toMatch(/must be a JSON object/);
    expect((await bad('{"errorRate":')).error).toMatch(/not valid JSON/);
    expect(await settings(e.url)).toEqual(before);
  });
});
