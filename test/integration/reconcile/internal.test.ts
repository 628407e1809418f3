/**
 * `reconcile internal` on a real pipeline (usage topic → windows → commit → submission topic → worker →
 * the emulator). Every hour of the produced events balances, and three seeded imbalances are found with
 * their reason: a record deleted from the ledger, a DLQ record never redriven (a customer AWS has no
 * agreement for), and an event produced after its hour was finalized (carried into the open hour). The
 * ground truth is the produced events' own sums, counted here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import type { Config } from '../../../src/config/config.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { createKafka } from '../../../src/kafka/client.ts';
import { partitionOfCustomer } from '../../../src/kafka/partitioner.ts';
import { recordId } from '../../../src/metering/submission-record.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../../src/produce/synthetic.ts';
import { collectInternal } from '../../../src/reconcile/collect.ts';
import { reconcileInternal } from '../../../src/reconcile/internal.ts';
import type { ReconcileRow } from '../../../src/reconcile/reconcile-rows.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../../../src/time/hours.ts';
import { cli } from '../../support/cli.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../../support/harness.ts';
import {
  expectedFrozen,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();
const customers = {
  ...TEST_CUSTOMERS,
  hooli: {
    customerAwsAccountId: '444444444444',
    licenseArn: 'arn:aws:license-manager::444444444444:license:l-d4',
  },
};
const billable = ['acme', 'globex', 'initech', 'umbrella'];
const subscribedAtAws = ['111111111111', '222222222222', '333333333333', 'cust-umbrella'];
const now = Date.now();

describe('reconcile internal', () => {
  let tp: TestPipeline;
  let emulator: RunningEmulator;
  let pipeline: RunningPipeline | undefined;
  let config: Config;
  let events: RawEvent[];
  let truth: Map<string, number>;
  const redis = createRedis(stackEnv().redisUrl);

  beforeAll(async () => {
    emulator = await startEmulator({ customers: subscribedAtAws });
    tp = testPipeline('reconcile', {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    config = tp.config();
    events = [
      ...syntheticEvents({
        count: 1500,
        customers: [...billable, 'hooli'],
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: now,
        duplicateRate: 0.05,
        seed: 18,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    truth = expectedFrozen(events);
    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(config, testLogger(), { processor: true, worker: true });
    const billableRecords = [...truth.keys()].filter((id) => !id.includes('|hooli|')).length;
    await waitFor(() => (emulator.state.snapshot().records.length >= billableRecords ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${emulator.state.snapshot().records.length} of ${billableRecords} records accepted`,
    });
  }, 240_000);

  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  async function reconcile(measure = true, carriedOk = false): Promise<ReconcileRow[]> {
    const inputs = await collectInternal({
      config,
      kafka: createKafka({ ...config.kafka, logger: testLogger() }),
      redis,
      keys: new Keys(config.redis.prefix),
      fromMs: hourStart(now) - 3 * HOUR_MS,
      toMs: hourStart(Date.now()) + HOUR_MS,
      nowMs: Date.now(),
      measure,
    });
    return reconcileInternal(inputs, { carriedOk });
  }

  it('balances every hour of the produced events, and finds each seeded imbalance with its reason', async () => {
    const keys = new Keys(config.redis.prefix);
    const rowOf = (rows: ReconcileRow[], id: string) => rows.find((r) => r.recordId === id);
    const hooliIds = [...truth.keys()].filter((id) => id.includes('|hooli|'));
    // Every hooli record is dead-lettered by the worker before anything is seeded.
    await waitFor(async () => {
      const rows = await reconcile(false);
      return hooliIds.every((id) =>
        rowOf(rows, id)?.reasons.includes('dead_lettered:customer_not_subscribed'),
      )
        ? true
        : undefined;
    });

    const before = await reconcile();
    for (const [id, quantity] of truth) {
      const row = rowOf(before, id);
      expect(row, id).toBeDefined();
      expect(row?.measured, id).toBe(quantity);
      expect(row?.frozen, id).toBe(quantity);
      expect(row?.emitted, id).toBe(quantity);
      if (id.includes('|hooli|')) {
        expect(row?.status, id).toBe('unbalanced');
        expect(row?.reasons, id).toEqual(['dead_lettered:customer_not_subscribed']);
        expect(row?.deadLettered, id).toBe(quantity);
      } else {
        expect(row?.accepted, id).toBe(quantity);
        expect([row?.status, row?.reasons], id).toEqual(['balanced', []]);
      }
    }
    expect(before.filter((r) => !truth.has(r.recordId))).toEqual([]);

    // Seed 1: a record deleted from the ledger.
    const [lostId] = [...truth.keys()].filter((id) => id.includes('|globex|'));
    await redis.del(keys.ledger(lostId as string));
    // Seed 2: an event of the oldest hour, produced after that hour was finalized: carried into the open hour.
    const oldest = hourStart(now) - 3 * HOUR_MS;
    const late: RawEvent = {
      id: `${tp.run}-late`,
      customer: 'acme',
      dimension: 'api_calls',
      quantity: 7,
      timestamp: new Date(oldest + 60_000).toISOString(),
    };
    await produceMessages([eventMessage(late)], { kafka, topic: tp.topics.usage });
    const audit = keys
      .partition({ topic: tp.topics.usage, partition: partitionOfCustomer('acme', 3) })
      .lateAudit();
    await waitFor(async () =>
      (await redis.lrange(audit, 0, -1)).some((e) => e.startsWith(late.id)) ? true : undefined,
    );

    const after = await reconcile();
    const lost = rowOf(after, lostId as string);
    expect(lost?.status).toBe('unbalanced');
    expect(lost?.reasons).toEqual(['missing_from_ledger']);
    expect(lost?.accepted).toBeUndefined();

    const lateId = recordId('prod-test', 'acme', 'api_calls', oldest);
    const origin = rowOf(after, lateId);
    expect(origin?.status).toBe('unbalanced');
    expect(origin?.reasons).toEqual(['carried_out']);
    expect(origin?.measured).toBe((truth.get(lateId) ?? 0) + 7);
    expect(origin?.carriedOut).toBe(7);
    expect(origin?.frozen).toBe(truth.get(lateId) ?? 0);
    expect(origin?.accepted).toBe(truth.get(lateId) ?? 0);
    const target = after.find((r) => r.carriedIn !== undefined);
    expect(target?.customer).toBe('acme');
    expect(target?.carriedIn).toBe(7);
    expect(target?.reasons).toContain('carried_in');

    for (const id of hooliIds)
      expect(rowOf(after, id)?.reasons).toEqual(['dead_lettered:customer_not_subscribed']);
    const seeded = new Set([lostId, lateId, ...hooliIds, target?.recordId]);
    expect(after.filter((r) => !seeded.has(r.recordId) && r.status !== 'balanced')).toEqual([]);

    // Carried units are accounted for: with --carried-ok the origin hour balances.
    const tolerant = await reconcile(true, true);
    expect(rowOf(tolerant, lateId)?.status).toBe('balanced');

    // Without re-reading the usage topic, the audit trail still names the carried hour.
    const unmeasured = await reconcile(false);
    expect(rowOf(unmeasured, lateId)?.reasons).toEqual(['carried_out']);
    expect(rowOf(unmeasured, lateId)?.lateEventsOut).toBe(1);

    // The CLI: exit 1 on the imbalance, the same rows as JSON, and CSV with a header.
    const env = { ...tp.env, LOG_LEVEL: 'error' };
    const from = hourIso(oldest);
    const json = await cli(['reconcile', 'internal', '--from', from, '--measure', '-o', 'json'], env);
    expect(json.code, json.stderr).toBe(1);
    const report = JSON.parse(json.stdout) as { summary: { unbalanced: number }; rows: ReconcileRow[] };
    expect(report.summary.unbalanced).toBe(after.filter((r) => r.status === 'unbalanced').length);
    expect(report.rows.find((r) => r.recordId === lostId)?.reasons).toEqual(['missing_from_ledger']);
    const csv = await cli(['reconcile', 'internal', '--from', from, '-o', 'csv'], env);
    expect(csv.code).toBe(1);
    expect(csv.stdout.split('\r\n')[0]).toBe(
      'hour,customer,dimension,measured,carried out,carried in,remainder,held,frozen,emitted,accepted,dead-lettered,redriven,status,reasons,notes',
    );
    expect(csv.stdout).toContain(',missing_from_ledger,\r\n');
  }, 240_000);
});
