/**
 * Tenant ids are the seller's own strings: `__proto__`, `constructor` and `hasOwnProperty` are tenants
 * like any other. Mapped in the customers file, their usage goes through the whole pipeline (usage topic →
 * windows → commit stage → worker → the emulator, which reads the same customers file as
 * `meterline emulator --customers` does) and every hour is billed with its exact quantity.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { subscriptionsFromMapping } from '../../src/emulator/customers-file.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../src/produce/synthetic.ts';
import { hourIso, hourStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, uniqueId, waitFor } from '../support/harness.ts';
import { acceptedAtAws, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'acme'];
const accountOf = new Map(tenants.map((t, i) => [t, String(610_000_000_000 + i)]));
// Object.fromEntries defines own keys: `{ __proto__: … }` in a literal would set the prototype instead.
const customers = Object.fromEntries(
  tenants.map((t) => {
    const account = accountOf.get(t) as string;
    return [
      t,
      {
        customerAwsAccountId: account,
        licenseArn: `arn:aws:license-manager::${account}:license:l-${account}`,
      },
    ];
  }),
);

const now = Date.now();
const events: RawEvent[] = [
  ...syntheticEvents({
    count: 1500,
    customers: tenants,
    dimensions: ['api_calls', 'jobs'],
    hours: 3,
    nowMs: now,
    seed: 14,
    idPrefix: uniqueId('proto'),
  }),
].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));

/** AWS account|dimension|hour → the sum of the tenant's events in that hour. */
function expectedSums(): Map<string, number> {
  const sums = new Map<string, number>();
  for (const e of events) {
    const key = `${accountOf.get(e.customer)}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
    sums.set(key, (sums.get(key) ?? 0) + e.quantity);
  }
  return sums;
}

let tp: TestPipeline | undefined;
let emulator: RunningEmulator | undefined;
let pipeline: RunningPipeline | undefined;

beforeAll(async () => {
  tp = testPipeline('proto', { customers });
  const file = readFileSync(tp.env.METERLINE_CUSTOMERS as string, 'utf8');
  expect(Object.keys(JSON.parse(file))).toEqual(tenants);
  emulator = await startEmulator({ customers: subscriptionsFromMapping(JSON.parse(file)) });
  tp.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING = emulator.url;
  await tp.createTopics(kafka);
  await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
  pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });
});

afterAll(async () => {
  await pipeline?.stop();
  await emulator?.close();
  await tp?.cleanup(kafka);
});

describe('tenants named like Object.prototype members', () => {
  it('are billed like any other tenant: every hour, its exact quantity', async () => {
    const expected = expectedSums();
    const em = emulator as RunningEmulator;
    const t = tp as TestPipeline;
    const failed = async () => (await readAllMessages(kafka, t.topics.failed)).length;
    // Done when every expected hour is accepted, or something went to the failed-records topic instead.
    await waitFor(
      async () =>
        em.state.snapshot().records.length >= expected.size || (await failed()) > 0 ? true : undefined,
      {
        timeoutMs: 120_000,
        describe: () => `${em.state.snapshot().records.length} of ${expected.size} records accepted`,
      },
    );
    const dead = (await readAllMessages(kafka, t.topics.failed)).map((m) => JSON.parse(String(m.value)));
    expect(
      dead.map((d) => `${d.reason} ${d.record?.customer ?? d.source?.key}`),
      'nothing dead-lettered',
    ).toEqual([]);
    const billed = acceptedAtAws(em);
    expect(billed).toEqual(expected);
    expect(em.state.snapshot().duplicates).toBe(0);
    // Each of the tenants has its three hours on both dimensions.
    for (const account of accountOf.values()) {
      expect([...billed.keys()].filter((k) => k.startsWith(`${account}|`))).toHaveLength(6);
    }
  });
});
