/**
 * The metering worker on AWS's worst day, against the emulator's 10 TPS quota: injected throttling, 5xx,
 * timeouts and unprocessed records; the worker (the real CLI) kill -9'd mid-batch; two workers sharing
 * the quota. Every record is accepted exactly once, stamped with its window's hour, and AWS never sees a
 * conflicting record.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { makeSubmissionRecord, type SubmissionRecord } from '../../src/metering/submission-record.ts';
import { produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { killHard, spawnMeterline, stopGracefully } from '../support/child.ts';
import { testKafka, testLogger, uniqueId, waitFor } from '../support/harness.ts';
import { readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const CUSTOMERS = 200;
const account = (i: number) => String(100_000_000_000 + i);
const customers = Object.fromEntries(
  Array.from({ length: CUSTOMERS }, (_, i) => [
    `tenant-${i}`,
    { customerAwsAccountId: account(i), licenseArn: `arn:aws:license-manager::${account(i)}:license:l-${i}` },
  ]),
);

/** `count` records over 200 customers, 5 dimensions and the last few closed hours, with known quantities. */
function records(count: number): SubmissionRecord[] {
  const now = Date.now();
  return Array.from({ length: count }, (_, i) =>
    makeSubmissionRecord({
      productCode: 'prod-test',
      customer: `tenant-${i % CUSTOMERS}`,
      dimension: `dim_${Math.floor(i / CUSTOMERS) % 5}`,
      hourMs: hourStart(now) - (1 + Math.floor(i / (CUSTOMERS * 5))) * HOUR_MS,
      quantity: 1 + (i % 97),
      api: 'BatchMeterUsage',
      finalizedAtMs: now,
    }),
  );
}

const keyOf = (customer: string, dimension: string, timestamp: string) =>
  `${customer}|${dimension}|${timestamp}`;

/** What AWS must end up holding: each record once, at its hour, with its quantity. */
function expected(rs: readonly SubmissionRecord[]): Map<string, number> {
  return new Map(
    rs.map((r) => [
      keyOf(customers[r.customer]?.customerAwsAccountId as string, r.dimension, r.hour.replace('.000Z', 'Z')),
      r.quantity,
    ]),
  );
}

function accepted(emulator: RunningEmulator): Map<string, number> {
  return new Map(
    emulator.state.snapshot().records.map((r) => [keyOf(r.customer, r.dimension, r.timestamp), r.quantity]),
  );
}

describe('the metering worker under fire', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  const pipelines: RunningPipeline[] = [];
  afterEach(async () => {
    for (const p of pipelines.splice(0)) await p.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  async function setUp(
    label: string,
    faults: Record<string, number>,
    rs: readonly SubmissionRecord[],
  ): Promise<TestPipeline> {
    emulator = await startEmulator({
      customers: Object.values(customers).map((c) => c.customerAwsAccountId),
      tps: 10,
      faults: { seed: 7, ...faults },
    });
    tp = testPipeline(label, {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_AWS_REQUEST_TIMEOUT: '2s' },
    });
    await tp.createTopics(kafka);
    await produceMessages(
      rs.map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      { kafka, topic: tp.topics.submissions },
    );
    return tp;
  }

  const STORM = {
    throttleRate: 0.2,
    errorRate: 0.05,
    timeoutRate: 0.05,
    unprocessedRate: 0.1,
    timeoutMs: 4_000,
  };

  it('accepts 5,000 records once each through throttling, 5xx, timeouts and unprocessed records', async () => {
    const rs = records(5_000);
    const t = await setUp('storm', STORM, rs);
    pipelines.push(
      await startPipeline(t.config(['worker']), testLogger(), { processor: false, worker: true }),
    );
    const want = expected(rs);
    const em = emulator as RunningEmulator;
    await waitFor(() => (accepted(em).size >= want.size ? true : undefined), {
      timeoutMs: 280_000,
      describe: () => `${accepted(em).size} of ${want.size} accepted`,
    });
    expect(accepted(em)).toEqual(want);
    const snap = em.state.snapshot();
    expect(snap.records).toHaveLength(want.size);
    expect(snap.duplicates).toBe(0);
    // The storm really blew: every kind of fault was injected.
    expect(snap.injected).toMatchObject({
      throttling: expect.any(Number),
      internalError: expect.any(Number),
      timeout: expect.any(Number),
      unprocessedRecords: expect.any(Number),
    });
    for (const n of Object.values(snap.injected).slice(0, 4)) expect(n).toBeGreaterThan(0);
    expect(await readAllMessages(kafka, t.topics.failed)).toEqual([]);
  }, 300_000);

  it('gives the same result when the worker is kill -9ed mid-batch three times', async () => {
    const rs = records(5_000);
    // 5xx, unprocessed records and slow answers keep calls in flight; no injected throttling, so the
    // kills, not the quota, are what this test spends its time on.
    const t = await setUp('worker-kill', { errorRate: 0.05, unprocessedRate: 0.1, latencyMs: 30 }, rs);
    const want = expected(rs);
    const em = emulator as RunningEmulator;
    const log = join(tmpdir(), `${uniqueId('worker-kill')}.log`);
    for (const share of [0.2, 0.45, 0.7]) {
      const child = spawnMeterline(['worker'], t.env, log);
      // Killed while calls are in flight: the emulator keeps accepting right up to the kill.
      await waitFor(() => (accepted(em).size >= want.size * share ? true : undefined), {
        timeoutMs: 240_000,
        describe: () => `${accepted(em).size} accepted before kill at ${share} (log ${log})`,
      });
      await killHard(child);
    }
    const child = spawnMeterline(['worker'], t.env, log);
    try {
      await waitFor(() => (accepted(em).size >= want.size ? true : undefined), {
        timeoutMs: 240_000,
        describe: () => `${accepted(em).size} of ${want.size} accepted (log ${log})`,
      });
    } finally {
      await stopGracefully(child);
    }
    expect(accepted(em)).toEqual(want);
    expect(em.state.snapshot().records).toHaveLength(want.size);
    expect(em.state.snapshot().duplicates).toBe(0);
    expect(await readAllMessages(kafka, t.topics.failed)).toEqual([]);
  }, 400_000);

  it('keeps two workers together under the 10 TPS quota', async () => {
    const rs = records(2_500);
    const t = await setUp('two-workers', {}, rs);
    for (let i = 0; i < 2; i++) {
      pipelines.push(
        await startPipeline(t.config(['worker']), testLogger(), { processor: false, worker: true }),
      );
    }
    const want = expected(rs);
    const em = emulator as RunningEmulator;
    await waitFor(() => (accepted(em).size >= want.size ? true : undefined), {
      timeoutMs: 240_000,
      describe: () => `${accepted(em).size} of ${want.size} accepted`,
    });
    expect(accepted(em)).toEqual(want);
    // Both workers took part, and their shared bucket kept them under AWS's quota.
    expect(pipelines.every((p) => (p.worker?.stats.calls ?? 0) > 0)).toBe(true);
    const snap = em.state.snapshot();
    const calls = snap.calls.BatchMeterUsage ?? 0;
    expect(snap.throttled.BatchMeterUsage ?? 0).toBeLessThan(0.02 * calls);
  }, 300_000);
});
