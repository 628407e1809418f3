/**
 * One bad record must not sink its batch-mates. AWS rejects a whole BatchMeterUsage call for one record
 * with a license it does not know (InvalidLicenseException); the worker narrows the failure down to that
 * record, dead-letters it with AWS's code, and bills the other 24. Real Kafka, Redis, the worker as the
 * pipeline runs it, and the emulator over HTTP with AWS's 10 TPS quota.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import type { FailedRecord } from '../../../src/metering/dlq-envelope.ts';
import { makeSubmissionRecord, type SubmissionRecord } from '../../../src/metering/submission-record.ts';
import { produceMessages } from '../../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { failedRecordValidator, testKafka, testLogger, waitFor } from '../../support/harness.ts';
import {
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();
const STALE_ACCOUNT = '555555555555';
const STALE_LICENSE = `arn:aws:license-manager::${STALE_ACCOUNT}:license:l-e5`;
// The seller's file holds a license ARN AWS never granted (a typo, or a license from another listing).
const UNKNOWN_LICENSE = `arn:aws:license-manager::${STALE_ACCOUNT}:license:l-unknown`;
const { acme, globex, initech } = TEST_CUSTOMERS;
const customers = {
  acme,
  globex,
  initech,
  stale: { customerAwsAccountId: STALE_ACCOUNT, licenseArn: UNKNOWN_LICENSE },
};
const accountOf = new Map(Object.entries(customers).map(([t, m]) => [t, m.customerAwsAccountId]));

const hour = hourStart(Date.now()) - HOUR_MS;
const good: SubmissionRecord[] = Array.from({ length: 24 }, (_, i) =>
  makeSubmissionRecord({
    productCode: 'prod-test',
    customer: ['acme', 'globex', 'initech'][i % 3] as string,
    dimension: `dim_${i}`,
    hourMs: hour,
    quantity: 10 + i,
    api: 'BatchMeterUsage',
    finalizedAtMs: Date.now(),
  }),
);
const bad = makeSubmissionRecord({
  productCode: 'prod-test',
  customer: 'stale',
  dimension: 'dim_bad',
  hourMs: hour,
  quantity: 7,
  api: 'BatchMeterUsage',
  finalizedAtMs: Date.now(),
});
// The bad record in the middle, so neither the first nor the last half of the call is clean.
const records = [...good.slice(0, 12), bad, ...good.slice(12)];

let emulator: RunningEmulator;
let tp: TestPipeline;
let pipeline: RunningPipeline | undefined;

beforeAll(async () => {
  emulator = await startEmulator({
    customers: [
      acme,
      globex,
      initech,
      { customerAwsAccountId: STALE_ACCOUNT, licenseArn: STALE_LICENSE },
    ].map((c) => ({ id: c.customerAwsAccountId, licenseArn: c.licenseArn })),
    tps: 10,
  });
  // One partition: the 25 records reach the worker in one batch, and so go to AWS in one call.
  tp = testPipeline('narrow', {
    partitions: 1,
    customers,
    env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
  });
  await tp.createTopics(kafka);
  await produceMessages(
    records.map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
    { kafka, topic: tp.topics.submissions },
  );
  pipeline = await startPipeline(tp.config(['worker']), testLogger(), { processor: false, worker: true });
});

afterAll(async () => {
  await pipeline?.stop();
  await emulator?.close();
  await tp?.cleanup(kafka);
});

describe('a BatchMeterUsage call rejected for one record', () => {
  it('bills the 24 good records and dead-letters only the one with the unknown license, with its AWS code', async () => {
    const failed = async () =>
      (await readAllMessages(kafka, tp.topics.failed)).map(
        (m) => JSON.parse(String(m.value)) as FailedRecord,
      );
    // Every record answered: accepted by AWS or on the failed-records topic.
    await waitFor(
      async () =>
        emulator.state.snapshot().records.length + (await failed()).length >= records.length
          ? true
          : undefined,
      {
        timeoutMs: 60_000,
        describe: async () =>
          `${emulator.state.snapshot().records.length} accepted, ${(await failed()).length} dead-lettered`,
      },
    );

    const snap = emulator.state.snapshot();
    // AWS really refused a call as a whole: the records travelled together.
    expect(snap.errors.InvalidLicenseException).toBeGreaterThanOrEqual(1);
    const accepted = new Map(
      snap.records.map((r) => [`${r.customer}|${r.dimension}|${r.timestamp}`, r.quantity]),
    );
    const want = new Map(
      good.map((r) => [
        `${accountOf.get(r.customer)}|${r.dimension}|${r.hour.replace('.000Z', 'Z')}`,
        r.quantity,
      ]),
    );
    expect(accepted).toEqual(want);
    expect(snap.duplicates).toBe(0);

    const dead = await failed();
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({
      stage: 'submit',
      reason: 'invalid_license',
      retriable: true,
      record: { recordId: bad.recordId, quantity: 7 },
    });
    expect(dead[0]?.detail).toContain('InvalidLicenseException');
    const valid = failedRecordValidator();
    expect(valid(dead[0]), JSON.stringify(valid.errors)).toBe(true);
  });
});
