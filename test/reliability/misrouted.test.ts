/**
 * Events produced without the customer key land on arbitrary partitions (a producer with another
 * partitioner does the same). They are forwarded to their customer's partition and counted there once:
 * the hour gets exactly one record, no DuplicateRecord, nothing on the DLQ, and every unit is billed —
 * in its own hour, or carried into the open hour if it arrived after its hour closed (never lost).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { createRedis } from '../../src/redis/client.ts';
import { aggregateField, Keys } from '../../src/redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { readAllMessages, TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();

describe('events on the wrong partition', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('are forwarded to their customer partition and billed once', async () => {
    emulator = await startEmulator({ customers: [TEST_CUSTOMERS.acme.customerAwsAccountId] });
    tp = testPipeline('misrouted', {
      partitions: 3,
      customers: { acme: TEST_CUSTOMERS.acme },
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    const home = partitionOfCustomer('acme', 3);
    const elsewhere = [0, 1, 2].filter((p) => p !== home);
    const hour = hourStart(Date.now()) - HOUR_MS;
    const events = Array.from({ length: 300 }, (_, i) => ({
      id: `${tp?.run}-e${i}`,
      customer: 'acme',
      dimension: 'api_calls',
      quantity: 1 + (i % 7),
      timestamp: new Date(hour + i * 10_000).toISOString(),
    }));
    // Two thirds go to the other partitions, without a key.
    const messages = events.map((e, i) =>
      i % 3 === 0
        ? eventMessage(e)
        : { key: null, value: JSON.stringify(e), partition: elsewhere[i % 2] as number },
    );
    const truth = events.reduce((s, e) => s + e.quantity, 0);
    const misrouted = messages.filter((m) => m.key === null).length;

    await tp.createTopics(kafka);
    await produceMessages(messages, { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });

    const stats = () => pipeline?.processor?.stats;
    await waitFor(() => ((stats()?.applied ?? 0) >= events.length ? true : undefined), {
      describe: () => `${stats()?.applied} of ${events.length} applied, ${stats()?.forwarded} forwarded`,
    });
    const record = await waitFor(() =>
      emulator?.state.snapshot().records.find((r) => r.timestamp === hourIso(hour).replace('.000Z', 'Z')),
    );
    expect(stats()?.forwarded).toBe(misrouted);
    const exposition = await (await fetch(`http://127.0.0.1:${pipeline.ops?.port}/metrics`)).text();
    expect(exposition).toContain(`meterline_events_total{result="forwarded"} ${misrouted}`);
    expect(exposition).toContain(`meterline_events_total{result="applied"} ${events.length}`);
    expect(stats()?.applied).toBe(events.length);
    // What missed its hour waits in acme's open hour, on acme's partition: the total is exact.
    const k = new Keys(tp.run).partition({ topic: tp.topics.usage, partition: home });
    const open = await redis.zrange(k.openHours(), '0', '-1');
    let carried = 0;
    for (const h of open) {
      carried +=
        Number((await redis.hget(k.aggregates(Number(h)), aggregateField('acme', 'api_calls'))) ?? 0) / 1e6;
    }
    expect(record.quantity + carried).toBe(truth);
    expect((stats()?.carriedLate ?? 0) > 0).toBe(carried > 0);
    const snap = emulator.state.snapshot();
    expect(snap.records).toHaveLength(1);
    expect(snap.duplicates).toBe(0);
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
  });
});
