/**
 * The metering worker against the emulator through the real SDK: batching, the ledger, whole-batch
 * TimestampOutOfBounds, unprocessed records, throttling, deadlines, and every dead-letter reason.
 */
import type { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { redrive } from '../../../src/dlq/redrive.ts';
import type { FaultHooks } from '../../../src/emulator/emulator-types.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import { ensureTopics } from '../../../src/kafka/topics.ts';
import type { FailedRecord } from '../../../src/metering/dlq-envelope.ts';
import { DlqPublisher } from '../../../src/metering/dlq-publisher.ts';
import { makeSubmissionRecord, type SubmissionRecord } from '../../../src/metering/submission-record.ts';
import { createRedis, type ScriptedRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { Ledger } from '../../../src/state/ledger.ts';
import { clientToken } from '../../../src/submit/meter-usage.ts';
import { MeteringWorker } from '../../../src/submit/worker.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { sdkClient } from '../../support/emulator.ts';
import {
  deleteKeys,
  deleteTopics,
  stackEnv,
  testKafka,
  testLogger,
  uniqueId,
} from '../../support/harness.ts';
import { readAllMessages, TEST_CUSTOMERS } from '../../support/pipeline-env.ts';

const kafka = testKafka();
const run = uniqueId('worker');
const dlqTopic = `${run}-failed`;
const subscribed = ['111111111111', '222222222222', '333333333333', 'cust-umbrella'];
let emulator: RunningEmulator;
let client: MarketplaceMeteringClient;
let redis: ScriptedRedis;
let producer: Producer;
const faults: FaultHooks = {};

beforeAll(async () => {
  emulator = await startEmulator({ customers: subscribed, faults });
  client = sdkClient(emulator.url);
  redis = createRedis(stackEnv().redisUrl);
  await ensureTopics(kafka, [{ topic: dlqTopic, numPartitions: 1 }]);
  producer = kafka.producer();
  await producer.connect();
});
afterAll(async () => {
  client.destroy();
  await emulator.close();
  await producer.disconnect();
  redis.disconnect();
  await deleteTopics(kafka, [dlqTopic]);
  await deleteKeys(run);
});
beforeEach(() => {
  faults.beforeOperation = undefined;
  faults.leaveUnprocessed = undefined;
  emulator.state.reset();
});

function worker(now: () => number = Date.now, via: MarketplaceMeteringClient = client): MeteringWorker {
  return new MeteringWorker({
    kafka,
    client: via,
    ledger: new Ledger(redis, new Keys(`${run}:${uniqueId('l')}`)),
    dlq: new DlqPublisher(producer, dlqTopic),
    customers: new Map(
      Object.entries({
        ...TEST_CUSTOMERS,
        hooli: {
          customerAwsAccountId: '444444444444',
          licenseArn: 'arn:aws:license-manager::444444444444:license:l-d4',
        },
        // initech's account with a license ARN AWS never granted it.
        stale: {
          customerAwsAccountId: '333333333333',
          licenseArn: 'arn:aws:license-manager::333333333333:license:l-unknown',
        },
      }),
    ),
    topic: 'unused',
    groupId: 'unused',
    deadlineMarginMs: 5 * 60_000,
    logger: testLogger(),
    backoff: { baseMs: 5, maxMs: 40 },
    now,
  });
}

const hourAgo = (n: number) => hourStart(Date.now()) - n * HOUR_MS;
function record(customer: string, dimension: string, hourMs: number, quantity: number): SubmissionRecord {
  return makeSubmissionRecord({
    productCode: 'prod-test',
    customer,
    dimension,
    hourMs,
    quantity,
    api: 'BatchMeterUsage',
    finalizedAtMs: Date.now(),
  });
}
const many = (n: number, hourMs = hourAgo(1)) =>
  Array.from({ length: n }, (_, i) =>
    record(['acme', 'globex', 'initech'][i % 3] as string, `dim_${i}`, hourMs, i + 1),
  );

async function deadLetters(recordIds: string[]): Promise<FailedRecord[]> {
  const all = (await readAllMessages(kafka, dlqTopic)).map(
    (m) => JSON.parse(String(m.value)) as FailedRecord,
  );
  return all.filter((f) => f.record && recordIds.includes(f.record.recordId));
}

describe('metering worker in container mode (MeterUsage)', () => {
  const meterUsageRecord = (dimension: string, quantity: number) =>
    makeSubmissionRecord({
      productCode: 'prod-container',
      customer: 'this-account',
      dimension,
      hourMs: hourAgo(1),
      quantity,
      api: 'MeterUsage',
      finalizedAtMs: Date.now(),
    });

  it('sends one call per record with a ClientToken from the record id: a resend is idempotent', async () => {
    const r = meterUsageRecord('vcpu_hours', 6);
    expect(clientToken(r.recordId)).toBe(clientToken(r.recordId));
    expect(clientToken(r.recordId)).toHaveLength(64);
    await worker().submit([r]);
    // A restarted worker with an empty ledger sends the same call again: AWS answers it as the same record.
    const again = worker();
    await again.submit([r]);
    const snap = emulator.state.snapshot();
    expect(snap.calls.MeterUsage).toBe(2);
    expect(snap.records.filter((x) => x.dimension === 'vcpu_hours')).toHaveLength(1);
    expect(snap.records.find((x) => x.dimension === 'vcpu_hours')).toMatchObject({
      quantity: 6,
      timestamp: new Date(hourAgo(1)).toISOString().replace('.000Z', 'Z'),
    });
    expect(again.stats).toMatchObject({ accepted: 1, deadLettered: {} });
  });

  it('treats a changed quantity for the same record as final, never billed twice', async () => {
    const r = meterUsageRecord('gpu_hours', 2);
    await worker().submit([r]);
    const w = worker();
    await w.submit([{ ...r, quantity: 3 }]);
    expect(w.stats.deadLettered).toEqual({ duplicate_record: 1 });
    const [dead] = await deadLetters([r.recordId]);
    expect(dead).toMatchObject({ reason: 'duplicate_record', record: { quantity: 3 } });
    expect(emulator.state.snapshot().records.find((x) => x.dimension === 'gpu_hours')?.quantity).toBe(2);
  });
});

describe('metering worker', () => {
  it('sends 26 records in 2 calls, stamped with their hour, and never sends an accepted record again', async () => {
    const w = worker();
    const records = many(26);
    await w.submit(records);
    const snap = emulator.state.snapshot();
    expect(snap.calls.BatchMeterUsage).toBe(2);
    expect(snap.records).toHaveLength(26);
    expect(new Set(snap.records.map((r) => r.timestamp))).toEqual(
      new Set([new Date(hourAgo(1)).toISOString().replace('.000Z', 'Z')]),
    );
    await w.submit(records);
    expect(emulator.state.snapshot().calls.BatchMeterUsage).toBe(2);
    expect(w.stats).toMatchObject({ accepted: 26, alreadyAccepted: 26 });
  });

  it("sends a record's usage allocations, which AWS checks against its quantity", async () => {
    const w = worker();
    const r = {
      ...record('globex', 'alloc_calls', hourAgo(2), 7),
      allocations: [{ tags: { team: 'red', env: 'prod' }, quantity: 5 }, { quantity: 2 }],
    };
    await w.submit([r]);
    const accepted = emulator.state.snapshot().records.filter((x) => x.dimension === 'alloc_calls');
    expect(accepted).toHaveLength(1);
    expect(accepted[0]?.usageAllocations).toEqual([
      {
        AllocatedUsageQuantity: 5,
        Tags: [
          { Key: 'team', Value: 'red' },
          { Key: 'env', Value: 'prod' },
        ],
      },
      { AllocatedUsageQuantity: 2 },
    ]);
  });

  it('splits a batch rejected for one out-of-window record, and dead-letters only that one', async () => {
    // AWS's clock disagrees with ours: it holds a 2 h window where the worker counts 24 h, so the worker
    // cannot tell which record is out and has to split the batch to find it.
    const strict = await startEmulator({ customers: subscribed, windowMs: { BatchMeterUsage: 2 * HOUR_MS } });
    const strictClient = sdkClient(strict.url);
    try {
      const w = worker(Date.now, strictClient);
      const good = many(4);
      const stale = record('acme', 'old', hourAgo(3), 7);
      await w.submit([...good, stale]);
      const snap = strict.state.snapshot();
      expect(snap.records.map((r) => r.dimension).sort()).toEqual(good.map((r) => r.dimension).sort());
      expect(snap.errors.TimestampOutOfBoundsException).toBeGreaterThanOrEqual(2);
      const [dead] = await deadLetters([stale.recordId]);
      expect(dead).toMatchObject({
        stage: 'submit',
        reason: 'timestamp_out_of_bounds',
        record: { recordId: stale.recordId },
      });
    } finally {
      strictClient.destroy();
      await strict.close();
    }
  });

  it('narrows a call AWS rejects for two records to those two, each dead-lettered with its own AWS code', async () => {
    // AWS knows each buyer's license here, so a license it never granted is refused.
    const strict = await startEmulator({
      customers: Object.values(TEST_CUSTOMERS).flatMap((c) =>
        'licenseArn' in c ? [{ id: c.customerAwsAccountId, licenseArn: c.licenseArn }] : [],
      ),
    });
    const strictClient = sdkClient(strict.url);
    try {
      const w = worker(Date.now, strictClient);
      const good = many(23);
      const unknownLicense = record('stale', 'api_calls', hourAgo(1), 4);
      const badTag = {
        ...record('globex', 'tagged', hourAgo(1), 6),
        allocations: [{ tags: { team: 'a|b' }, quantity: 6 }],
      };
      await w.submit([...good.slice(0, 5), unknownLicense, ...good.slice(5, 17), badTag, ...good.slice(17)]);
      const snap = strict.state.snapshot();
      expect(snap.errors.InvalidLicenseException).toBeGreaterThanOrEqual(1);
      expect(snap.errors.InvalidTagException).toBeGreaterThanOrEqual(1);
      expect(snap.records.map((r) => r.dimension).sort()).toEqual(good.map((r) => r.dimension).sort());
      const dead = await deadLetters([
        unknownLicense.recordId,
        badTag.recordId,
        ...good.map((r) => r.recordId),
      ]);
      expect(Object.fromEntries(dead.map((d) => [d.record?.recordId, d.reason]))).toEqual({
        [unknownLicense.recordId]: 'invalid_license',
        [badTag.recordId]: 'invalid_tag',
      });
      expect(w.stats.deadLettered).toEqual({ invalid_license: 1, invalid_tag: 1 });
    } finally {
      strictClient.destroy();
      await strict.close();
    }
  });

  it('does not split a call AWS refuses as a whole (its product code): every record dead-lettered at once', async () => {
    const other = await startEmulator({ customers: subscribed, productCodes: ['prod-other'] });
    const otherClient = sdkClient(other.url);
    try {
      const w = worker(Date.now, otherClient);
      const records = Array.from({ length: 8 }, (_, i) => record('acme', `product_${i}`, hourAgo(1), i + 1));
      await w.submit(records);
      expect(other.state.snapshot().calls.BatchMeterUsage).toBe(1);
      const dead = await deadLetters(records.map((r) => r.recordId));
      expect(dead.map((d) => d.reason)).toEqual(records.map(() => 'invalid_product_code'));
    } finally {
      otherClient.destroy();
      await other.close();
    }
  });

  it('dead-letters a record whose deadline has passed without sending it', async () => {
    const w = worker();
    const stale = record('acme', 'old', hourAgo(30), 7);
    await w.submit([stale]);
    expect(emulator.state.snapshot().calls.BatchMeterUsage ?? 0).toBe(0);
    const [dead] = await deadLetters([stale.recordId]);
    expect(dead).toMatchObject({ reason: 'deadline_exceeded' });
  });

  it('retries unprocessed records and throttling until each record is accepted exactly once', async () => {
    const w = worker();
    const tries = new Map<string, number>();
    faults.leaveUnprocessed = (r) => {
      const key = `${r.CustomerAWSAccountId ?? r.CustomerIdentifier}|${r.Dimension}`;
      tries.set(key, (tries.get(key) ?? 0) + 1);
      return (tries.get(key) ?? 0) < 3;
    };
    let throttles = 2;
    faults.beforeOperation = () =>
      throttles-- > 0
        ? { kind: 'error', error: new ServiceError('ThrottlingException', 'Rate exceeded') }
        : undefined;
    const records = many(10);
    await w.submit(records);
    const snap = emulator.state.snapshot();
    expect(snap.records).toHaveLength(10);
    expect(snap.duplicates).toBe(0);
    expect(snap.records.map((r) => r.quantity).sort((a, b) => a - b)).toEqual(records.map((r) => r.quantity));
    expect(w.stats.retries).toBeGreaterThanOrEqual(4);
  });

  it('dead-letters a record as deadline_exceeded once AWS keeps failing past its deadline', async () => {
    let clock = Date.now();
    const w = worker(() => clock);
    const r = record('acme', 'api_calls', hourAgo(1), 5);
    faults.beforeOperation = () => {
      clock += 6 * HOUR_MS; // each failed call costs hours on this clock
      return { kind: 'error', error: new ServiceError('InternalServiceErrorException', 'boom') };
    };
    await w.submit([r]);
    const [dead] = await deadLetters([r.recordId]);
    expect(dead).toMatchObject({
      reason: 'deadline_exceeded',
      record: { recordId: r.recordId },
      firstError: { code: 'aws_unavailable' },
      lastError: { code: 'deadline_exceeded' },
    });
    expect(dead?.attempts).toBeGreaterThan(1);
    expect(emulator.state.snapshot().records).toHaveLength(0);
    // AWS is back, but the hour's deadline has passed on this clock: a redrive is refused, and says why.
    faults.beforeOperation = undefined;
    const outcome = await redrive(
      { id: '0:0', envelope: dead as FailedRecord },
      {
        kafka,
        producer,
        redis,
        keys: new Keys(`${run}:${uniqueId('r')}`),
        dlqTopic,
        topics: { usage: 'unused', submissions: 'unused' },
        api: 'BatchMeterUsage',
        marginMs: 5 * 60_000,
        dryRun: false,
        now: () => clock,
      },
    );
    expect(outcome).toEqual({
      kind: 'refused',
      why: `past its deadline ${r.deadline}: AWS no longer accepts the hour ${r.hour}`,
    });
  });

  it('dead-letters unmapped, unsubscribed and conflicting records with their reasons', async () => {
    const w = worker();
    const unmapped = record('nomap', 'api_calls', hourAgo(1), 1);
    const unsubscribed = record('hooli', 'api_calls', hourAgo(1), 1);
    const first = record('acme', 'conflict', hourAgo(2), 3);
    await w.submit([first]);
    // A second worker with an empty ledger and a different quantity for the same hour.
    const conflicting = { ...first, quantity: 4 };
    await worker().submit([unmapped, unsubscribed, conflicting]);
    const dead = await deadLetters([unmapped.recordId, unsubscribed.recordId, first.recordId]);
    expect(Object.fromEntries(dead.map((d) => [d.record?.customer, d.reason]))).toEqual({
      nomap: 'customer_mapping_missing',
      hooli: 'customer_not_subscribed',
      acme: 'duplicate_record',
    });
    expect(emulator.state.snapshot().records.find((r) => r.dimension === 'conflict')?.quantity).toBe(3);
  });

  it('dead-letters, without sending it, a record whose id the ledger accepted with another quantity', async () => {
    const w = worker();
    const first = record('initech', 'ledger_conflict', hourAgo(2), 5);
    await w.submit([first]);
    const calls = emulator.state.snapshot().calls.BatchMeterUsage;
    await w.submit([{ ...first, quantity: 9 }]);
    expect(emulator.state.snapshot().calls.BatchMeterUsage).toBe(calls);
    const [dead] = await deadLetters([first.recordId]);
    expect(dead).toMatchObject({ reason: 'duplicate_record', record: { quantity: 9 } });
    expect(dead?.detail).toContain('AWS already accepted 5');
  });
});
