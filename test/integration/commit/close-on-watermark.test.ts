/**
 * Under steady traffic an hour becomes closable when the event-time watermark passes it: the batch that
 * moves the slowest partition past the hour's end + grace + out-of-orderness wakes the commit stage, so
 * the hour closes then, not at the next interval tick. Here the interval is an hour and the idle timeout
 * ten minutes, so within this test only such a wake can freeze the hour.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { partitionOfCustomer } from '../../../src/kafka/partitioner.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { simulatedClock } from '../../support/sim-clock.ts';

const kafka = testKafka();
const PARTITIONS = 3;

describe('the processor wakes the commit stage when the watermark passes an hour', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await tp?.cleanup(kafka);
  });

  it('freezes the hour after the batch that makes it closable, with an hour-long commit interval', async () => {
    // One customer per partition: the watermark is the slowest partition's event time.
    const customers: string[] = [];
    for (let i = 0; customers.length < PARTITIONS; i++) {
      const c = `cust-${i}`;
      if (!customers.some((x) => partitionOfCustomer(x, PARTITIONS) === partitionOfCustomer(c, PARTITIONS)))
        customers.push(c);
    }
    tp = testPipeline('close-on-watermark', {
      partitions: PARTITIONS,
      tenants: customers,
      env: { METERLINE_COMMIT_INTERVAL: '1h', METERLINE_IDLE_TIMEOUT: '10m' },
    });
    const config = tp.config(['processor']);
    const hour = hourStart(Date.now()) - HOUR_MS;
    const clock = simulatedClock(hour + HOUR_MS + 30 * 60_000);
    await tp.createTopics(kafka);
    pipeline = await startPipeline(config, testLogger(), { processor: true, worker: false, now: clock.now });
    const stage = () => pipeline?.processor?.commitStage.stats;
    const stats = () => pipeline?.processor?.stats;
    const send = async (at: number, tag: string) => {
      const events = customers.map((customer) => ({
        id: `${tp?.run}-${tag}-${customer}`,
        customer,
        dimension: 'api_calls',
        quantity: 2,
        timestamp: new Date(at).toISOString(),
      }));
      const before = stats()?.applied ?? 0;
      await produceMessages(events.map(eventMessage), { kafka, topic: tp?.topics.usage as string });
      await waitFor(() => ((stats()?.applied ?? 0) >= before + events.length ? true : undefined), {
        describe: () => `${stats()?.applied} events applied`,
      });
    };
    // Usage in the hour on every partition; the partitions stay active (idle only after ten minutes).
    await send(hour + 10 * 60_000, 'in-hour');
    // The premise: nothing closes the hour yet (the watermark is in the hour).
    expect(stage()?.hoursFinalized).toBe(0);
    // The next hour's events on every partition: the watermark passes end + grace + out-of-orderness.
    await send(hour + HOUR_MS + 10 * 60_000, 'next-hour');

    await waitFor(() => ((stage()?.hoursFinalized ?? 0) > 0 ? true : undefined), {
      describe: () => `no hour frozen; commit stage ${JSON.stringify(stage())}`,
    });
    expect(stage()?.recordsEmitted).toBe(customers.length);
    expect(stage()?.batchWakes).toBeGreaterThanOrEqual(1);
    // Still well inside the idle timeout: the partitions were active throughout.
    expect(clock.now()).toBeLessThan(hour + HOUR_MS + 40 * 60_000);
  });
});
