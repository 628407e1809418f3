/**
 * Gap detection (issue 18, "what must be shown" 4): a subscribed customer with hourly zero records whose
 * worker was stopped until one hour was past its AWS deadline. The processor (the real clock) freezes a
 * zero record for each of the three closed hours since the subscription; the worker comes back (its clock
 * moved to a few minutes before the oldest hour's deadline) and dead-letters that one, billing the other
 * two. `reconcile gaps` shows exactly that hour, and the gap job's metric counts it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { acceptanceDeadline } from '../../../src/metering/aws-window.ts';
import { recordId } from '../../../src/metering/submission-record.ts';
import { register } from '../../../src/observability/metrics.ts';
import { findGaps, GapMonitor } from '../../../src/reconcile/gaps.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { Ledger } from '../../../src/state/ledger.ts';
import { HOUR_MS, hourIso, hourStart } from '../../../src/time/hours.ts';
import { cli } from '../../support/cli.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../../support/harness.ts';
import {
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();

describe('reconcile gaps', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  const pipelines: RunningPipeline[] = [];
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    for (const p of pipelines) await p.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('shows exactly the hour a stopped worker let pass its deadline, and the metric counts it', async () => {
    const now = Date.now();
    const current = hourStart(now);
    const hours = [current - 3 * HOUR_MS, current - 2 * HOUR_MS, current - HOUR_MS];
    const [lost] = hours as [number];
    emulator = await startEmulator({ customers: [TEST_CUSTOMERS.acme.customerAwsAccountId] });
    tp = testPipeline('gaps', {
      partitions: 2,
      dimensions: [{ name: 'api_calls', zeroRecords: true }, { name: 'jobs' }],
      customers: { acme: { ...TEST_CUSTOMERS.acme, subscribedAt: new Date(lost).toISOString() } },
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    const config = tp.config();
    await tp.createTopics(kafka);
    // The processor alone: acme has no usage at all, so each closed hour gets a zero record.
    pipelines.push(await startPipeline(config, testLogger(), { processor: true, worker: false }));
    const ids = hours.map((h) => recordId('prod-test', 'acme', 'api_calls', h));
    await waitFor(async () => {
      const emitted = new Set(
        (await readAllMessages(kafka, config.topics.submissions)).map(
          (m) => JSON.parse(String(m.value)).recordId,
        ),
      );
      return ids.every((id) => emitted.has(id)) ? true : undefined;
    });
    // The worker comes back 4 minutes before the oldest hour's deadline: inside its 5-minute margin.
    const back = acceptanceDeadline('BatchMeterUsage', lost) - 4 * 60_000;
    const skew = back - Date.now();
    pipelines.push(
      await startPipeline(config, testLogger(), {
        processor: false,
        worker: true,
        now: () => Date.now() + skew,
      }),
    );
    const keys = new Keys(config.redis.prefix);
    const ledger = new Ledger(redis, keys);
    await waitFor(async () => ((await ledger.accepted(ids)).size === 2 ? true : undefined));
    await waitFor(async () =>
      (await readAllMessages(kafka, config.topics.failed)).some(
        (m) => JSON.parse(String(m.value)).record?.recordId === ids[0],
      )
        ? true
        : undefined,
    );
    expect([...(await ledger.accepted(ids)).keys()].sort()).toEqual([ids[1], ids[2]].sort());

    // An hour after the deadline: that hour is missed, nothing else.
    const later = acceptanceDeadline('BatchMeterUsage', lost) + HOUR_MS;
    const { rows } = await findGaps({
      config,
      redis,
      keys,
      nowMs: later,
      fromMs: later - 48 * HOUR_MS,
      lateAfterMs: HOUR_MS,
    });
    expect(rows.map((r) => [r.customer, r.dimension, r.hour, r.state])).toEqual([
      ['acme', 'api_calls', hourIso(lost), 'missed'],
    ]);

    // The gap job sets the metric from the same check.
    const monitor = new GapMonitor({ config, redis, keys, logger: testLogger(), now: () => later });
    await monitor.check();
    const gauge = await register.getSingleMetric('meterline_billing_gaps')?.get();
    expect(gauge?.values.map((v) => [v.labels.state, v.value]).sort()).toEqual([
      ['late', 0],
      ['missed', 1],
    ]);

    // The CLI, on today's clock: the hour is closed and overdue but still billable, so it is late.
    const out = await cli(['reconcile', 'gaps', '--from', '6h', '-o', 'json'], {
      ...tp.env,
      LOG_LEVEL: 'error',
    });
    expect(out.code, out.stderr).toBe(1);
    const report = JSON.parse(out.stdout) as { rows: { hour: string; customer: string; state: string }[] };
    expect(report.rows.map((r) => [r.customer, r.hour, r.state])).toEqual([['acme', hourIso(lost), 'late']]);
  }, 240_000);
});
