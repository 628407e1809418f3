/**
 * End to end on the real broker and Redis: usage topic → windows → commit stage → submission topic →
 * worker → the emulator through the real AWS SDK. Checks exact sums per customer/dimension/hour, that
 * resent ids count once, and that every bad input and every unbillable record lands in the DLQ.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import { eventMessage, type Outgoing, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { readTopic, testKafka, testLogger, uniqueId, waitFor } from '../support/harness.ts';
import { readAllMessages, TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const customers = {
  ...TEST_CUSTOMERS,
  // Mapped, but AWS has no agreement for it: the worker must dead-letter, not drop.
  hooli: {
    customerAwsAccountId: '444444444444',
    licenseArn: 'arn:aws:license-manager::444444444444:license:l-d4',
  },
};
const subscribed = ['111111111111', '222222222222', '333333333333', 'cust-umbrella'];
const billable = ['acme', 'globex', 'initech', 'umbrella'];
const dimensions = ['api_calls', 'jobs'];

const run = uniqueId('e2e');
let tp: TestPipeline | undefined;
let emulator: RunningEmulator;
let pipeline: RunningPipeline | undefined;
const kafka = testKafka();
const now = Date.now();

const bad: { key: string; value: Buffer | string | null; reason: string }[] = [
  { key: 'bad-malformed', value: '{"id": "x", "customer": ', reason: 'malformed_json' },
  { key: 'bad-empty', value: Buffer.alloc(0), reason: 'empty_message' },
  { key: 'bad-tombstone', value: null, reason: 'tombstone' },
  { key: 'bad-schema', value: JSON.stringify({ id: 'b1', customer: 'acme' }), reason: 'schema_violation' },
  {
    key: 'bad-naive',
    value: JSON.stringify({
      id: 'b2',
      customer: 'acme',
      dimension: 'jobs',
      quantity: 1,
      timestamp: '2026-11-27T10:00:00',
    }),
    reason: 'timestamp_without_zone',
  },
  {
    key: 'bad-future',
    value: JSON.stringify({
      id: 'b3',
      customer: 'acme',
      dimension: 'jobs',
      quantity: 1,
      timestamp: now + 2 * HOUR_MS,
    }),
    reason: 'future_timestamp',
  },
  {
    key: 'bad-old',
    value: JSON.stringify({
      id: 'b4',
      customer: 'acme',
      dimension: 'jobs',
      quantity: 1,
      timestamp: now - 3 * 24 * HOUR_MS,
    }),
    reason: 'too_old',
  },
  {
    key: 'bad-negative',
    value: JSON.stringify({
      id: 'b5',
      customer: 'acme',
      dimension: 'jobs',
      quantity: -4,
      timestamp: now - HOUR_MS,
    }),
    reason: 'negative_quantity',
  },
  {
    key: 'bad-dimension',
    value: JSON.stringify({
      id: 'b6',
      customer: 'acme',
      dimension: 'gpu_hours',
      quantity: 1,
      timestamp: now - HOUR_MS,
    }),
    reason: 'unknown_dimension',
  },
  {
    key: 'bad-huge',
    value: JSON.stringify({
      id: 'b7',
      customer: 'acme',
      dimension: 'jobs',
      quantity: 1e17,
      timestamp: now - HOUR_MS,
    }),
    reason: 'quantity_out_of_range',
  },
  {
    key: 'bad-large',
    value: JSON.stringify({ id: 'b8', pad: 'x'.repeat(5000) }),
    reason: 'message_too_large',
  },
];

const events: RawEvent[] = [
  ...syntheticEvents({
    count: 3000,
    customers: [...billable, 'hooli', 'nomap'],
    dimensions,
    hours: 3,
    nowMs: now,
    duplicateRate: 0.05,
    seed: 7,
    idPrefix: run,
  }),
  // Producers send in event-time order, give or take: the watermark closes hours behind them.
].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
// Resend a block of events with the same ids, as a producer retry would.
const resent = events.slice(0, 200).map((e) => ({ ...e }));

/** Expected billed quantity per customer|dimension|hour, counting each event id once. */
function expectedSums(all: RawEvent[]): Map<string, number> {
  const seen = new Set<string>();
  const sums = new Map<string, number>();
  for (const e of all) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const key = `${e.customer}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
    sums.set(key, (sums.get(key) ?? 0) + e.quantity);
  }
  return sums;
}

describe('pipeline end to end', () => {
  beforeAll(async () => {
    emulator = await startEmulator({ customers: subscribed });
    tp = testPipeline('e2e', {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_MAX_MESSAGE_BYTES: '4096' },
    });
    // The whole backlog is on the topic before the pipeline starts.
    await tp.createTopics(kafka);
    const messages: Outgoing[] = [
      ...events.map(eventMessage),
      ...bad.map((b) => ({ key: b.key, value: b.value })),
    ];
    await produceMessages(messages, { kafka, topic: tp.topics.usage });
    await produceMessages(resent.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });
  });

  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('bills exactly the produced sums per customer, dimension and hour, each id once', async () => {
    const expected = expectedSums([...events, ...resent].filter((e) => billable.includes(e.customer)));
    const accountOf = new Map(
      Object.entries(customers).map(([tenant, m]) => [
        'customerAwsAccountId' in m ? m.customerAwsAccountId : m.customerIdentifier,
        tenant,
      ]),
    );
    const billed = await waitFor(
      () => {
        const records = emulator.state.snapshot().records;
        return records.length >= expected.size ? records : undefined;
      },
      {
        timeoutMs: 90_000,
        describe: () => `${emulator.state.snapshot().records.length} of ${expected.size} records accepted`,
      },
    );
    const actual = new Map(
      billed.map((r) => [`${accountOf.get(r.customer)}|${r.dimension}|${r.timestamp}`, r.quantity]),
    );
    expect(actual).toEqual(expected);
    expect(billed.every((r) => r.api === 'BatchMeterUsage')).toBe(true);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    // Three closed hours, each billed under its own hour, never the time of sending.
    expect(new Set(billed.map((r) => r.timestamp)).size).toBe(3);
  });

  it('dead-letters every bad event with its reason code and original bytes, and every unbillable record; holds an unmapped tenant', async () => {
    const unbillable = new Set([...expectedSums([...events].filter((e) => e.customer === 'hooli')).keys()]);
    const messages = await readTopic(kafka, (tp as TestPipeline).topics.failed, bad.length + unbillable.size);
    const failed = messages.map((m) => JSON.parse(String(m.value)) as FailedRecord);

    for (const b of bad) {
      const hit = failed.find((f) => f.stage === 'ingest' && f.source?.key === b.key);
      expect(hit, b.key).toBeDefined();
      expect(hit?.reason).toBe(b.reason);
      const original = b.value === null ? null : Buffer.from(b.value).toString('base64');
      expect(hit?.originalBase64).toBe(original);
    }
    const submitFailures = failed.filter((f) => f.stage === 'submit');
    const byReason = (reason: string, tenant: string) =>
      submitFailures.filter((f) => f.reason === reason && f.record?.customer === tenant).length;
    expect(byReason('customer_not_subscribed', 'hooli')).toBe(
      [...unbillable].filter((k) => k.startsWith('hooli|')).length,
    );
    expect(failed.length).toBe(bad.length + unbillable.size);
    // A tenant without an AWS identity yet is not a failure: its records wait, frozen, for its registration.
    expect(failed.filter((f) => f.record?.customer === 'nomap')).toEqual([]);
    const submitted = await readAllMessages(kafka, (tp as TestPipeline).topics.submissions);
    expect(submitted.filter((m) => JSON.parse(String(m.value)).customer === 'nomap')).toEqual([]);
    const nomapHours = expectedSums([...events].filter((e) => e.customer === 'nomap')).size;
    expect(nomapHours).toBeGreaterThan(0);
  });
});
