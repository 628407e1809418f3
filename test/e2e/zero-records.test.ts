/**
 * Hourly zero records through the whole pipeline: three subscribed customers, one of them without any
 * usage for two hours, each get exactly one accepted record per closed hour since they subscribed (0
 * when idle). The idle
 * customer's partition has no traffic at all, so its hours close on idleness.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { syntheticEvents } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import { TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const { acme, globex } = TEST_CUSTOMERS;
const hooli = {
  customerAwsAccountId: '444444444444',
  licenseArn: 'arn:aws:license-manager::444444444444:license:l-d4',
};
const subscribed = { acme, globex, hooli };

describe('hourly zero records', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('give every subscribed customer one record per closed hour, 0 without usage', async () => {
    emulator = await startEmulator({
      customers: Object.values(subscribed).map((c) => c.customerAwsAccountId),
    });
    const now = Date.now();
    const since = new Date(hourStart(now) - 2 * HOUR_MS).toISOString();
    tp = testPipeline('zero', {
      partitions: 6,
      dimensions: [{ name: 'api_calls', zeroRecords: true }, { name: 'jobs' }],
      customers: Object.fromEntries(
        Object.entries(subscribed).map(([tenant, m]) => [tenant, { ...m, subscribedAt: since }]),
      ),
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    expect([partitionOfCustomer('acme', 6), partitionOfCustomer('globex', 6)]).not.toContain(
      partitionOfCustomer('hooli', 6),
    );
    // acme and globex use both dimensions in the last two closed hours; hooli uses nothing.
    const events = [
      ...syntheticEvents({
        count: 400,
        customers: ['acme', 'globex'],
        dimensions: ['api_calls', 'jobs'],
        hours: 2,
        nowMs: now,
        duplicateRate: 0,
        seed: 3,
        idPrefix: tp.run,
      }),
    ];
    const hours = [hourStart(now) - 2 * HOUR_MS, hourStart(now) - HOUR_MS].map(hourIso);
    const sums = new Map<string, number>();
    for (const e of events) {
      const key = `${subscribed[e.customer as 'acme'].customerAwsAccountId}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
      sums.set(key, (sums.get(key) ?? 0) + e.quantity);
    }
    const expected = new Map(sums);
    for (const hour of hours) expected.set(`${hooli.customerAwsAccountId}|api_calls|${hour}`, 0);

    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });

    const records = () => emulator?.state.snapshot().records ?? [];
    await waitFor(() => (records().length >= expected.size ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `${records().length} of ${expected.size} records accepted`,
    });
    const accepted = new Map(
      records().map((r) => [`${r.customer}|${r.dimension}|${r.timestamp}`, r.quantity]),
    );
    expect(accepted).toEqual(expected);
    // One record per key: none twice, and no second attempt that AWS would refuse.
    expect(records()).toHaveLength(expected.size);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(pipeline.processor?.commitStage.modelStats.zeroRecords).toBe(2);
    // Every closed hour is out: what the processor still holds is at most the current hour.
    const gauge = async (name: string) => {
      const text = await (await fetch(`http://127.0.0.1:${pipeline?.ops?.port}/metrics`)).text();
      return Number(text.match(new RegExp(`^${name}\\{stage="processor"\\} (\\S+)$`, 'm'))?.[1]);
    };
    await waitFor(async () =>
      (await gauge('meterline_oldest_unsubmitted_hour_age_seconds')) < 3600 ? true : undefined,
    );
    expect(await gauge('meterline_oldest_unsubmitted_deadline_seconds')).toBeGreaterThan(22 * 3600);
    const text = await (await fetch(`http://127.0.0.1:${pipeline?.ops?.port}/metrics`)).text();
    // Every usage message is applied, and each emitted hour's finalize lag was observed.
    for (let p = 0; p < 6; p++)
      expect(text).toContain(`meterline_processor_lag_messages{partition="${p}"} 0`);
    expect(Number(text.match(/^meterline_finalize_lag_seconds_count (\d+)$/m)?.[1])).toBeGreaterThanOrEqual(
      2,
    );
  });
});
