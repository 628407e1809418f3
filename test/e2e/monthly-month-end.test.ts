/**
 * The monthly model end to end, through the worker and the emulator, across a month's end. On a
 * simulated clock, six hours from three hours before the start of this month to three hours after it,
 * one buyer reports seats (aggregation max: each event says how many seats are in use) and storage
 * (aggregation sum: the hour's total). What AWS accepted is compared, hour by hour, with the model's
 * definition computed here from the events: each hour bills the rise of the month's high-water mark of
 * the hour's peak (seats) or sum (storage) over what the month billed so far, and a new month starts
 * from zero.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { type RawEvent, seededRandom } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourIso, monthStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';

const kafka = testKafka();
const ACME = TEST_CUSTOMERS.acme;

describe('a monthly dimension across a month end', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('bills each month its own high-water mark, hour by hour, as the model defines it', async () => {
    const boundary = monthStart(Date.now());
    const first = boundary - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(first + 50 * 60_000);
    const emulator: RunningEmulator = await startEmulator({
      customers: [{ id: ACME.customerAwsAccountId, licenseArn: ACME.licenseArn }],
      now,
    });
    stops.push(() => emulator.close());
    tp = testPipeline('monthly', {
      partitions: 1,
      customers: { acme: ACME },
      dimensions: [
        { name: 'seats', model: 'monthly', aggregation: 'max' },
        { name: 'storage', model: 'monthly', aggregation: 'sum' },
      ],
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    await tp.createTopics(kafka);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());

    const random = seededRandom(31);
    const events: RawEvent[] = [];
    let n = 0;
    for (let i = 0; i < 6; i++) {
      const hour = first + i * HOUR_MS;
      setClock(hour + 50 * 60_000);
      const batch: RawEvent[] = [];
      for (let k = 0; k < 4; k++) {
        const at = new Date(hour + k * 10 * 60_000).toISOString();
        batch.push({
          id: `${tp.run}-${n++}`,
          customer: 'acme',
          dimension: 'seats',
          quantity: 1 + Math.floor(random() * 12),
          timestamp: at,
        });
        batch.push({
          id: `${tp.run}-${n++}`,
          customer: 'acme',
          dimension: 'storage',
          quantity: 1 + Math.floor(random() * 5),
          timestamp: at,
        });
      }
      await producer.send({
        topic: tp.topics.usage,
        acks: -1,
        messages: batch.map((e) => ({ key: e.customer, value: JSON.stringify(e), timestamp: String(now()) })),
      });
      events.push(...batch);
      const closed = pipeline.processor?.commitStage.stats.hoursFinalized ?? 0;
      await waitFor(
        async () => {
          const [task] = (await pipeline.processor?.app.tasks()) ?? [];
          return (task?.restorePoint.checkpoint ?? -1n) + 1n >= BigInt(n) ? true : undefined;
        },
        { describe: () => `hour ${i}: not applied yet` },
      );
      // The hour ends; every partition is idle, so it closes (with or without a record to send).
      setClock(hour + HOUR_MS + 60_000);
      await waitFor(
        () => ((pipeline.processor?.commitStage.stats.hoursFinalized ?? 0) > closed ? true : undefined),
        { timeoutMs: 60_000, describe: () => `hour ${i} (${hourIso(hour)}) not closed` },
      );
    }
    // Give the worker the last hour's records: everything the truth says is due.
    const truth = new Map<string, number>();
    for (const dimension of ['seats', 'storage'] as const) {
      let month = -1;
      let mark = 0;
      for (let i = 0; i < 6; i++) {
        const hour = first + i * HOUR_MS;
        if (monthStart(hour) !== month) {
          month = monthStart(hour);
          mark = 0;
        }
        const own = events.filter(
          (e) =>
            e.dimension === dimension &&
            Date.parse(String(e.timestamp)) - hour < HOUR_MS &&
            Date.parse(String(e.timestamp)) >= hour,
        );
        const level =
          dimension === 'seats'
            ? Math.max(...own.map((e) => e.quantity))
            : own.reduce((sum, e) => sum + e.quantity, 0);
        if (level > mark) {
          truth.set(`${ACME.customerAwsAccountId}|${dimension}|${hourIso(hour)}`, level - mark);
          mark = level;
        }
      }
    }
    await waitFor(() => (acceptedAtAws(emulator).size >= truth.size ? true : undefined), {
      timeoutMs: 60_000,
      describe: () => `${acceptedAtAws(emulator).size} of ${truth.size} records accepted`,
    });
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual(Object.fromEntries(truth));
    // Both months billed something, and the new month started from zero.
    const months = new Set([...truth.keys()].map((k) => monthStart(Date.parse(k.split('|')[2] as string))));
    expect(months.size).toBe(2);
    expect(emulator.state.snapshot().duplicates).toBe(0);
  }, 300_000);
});
