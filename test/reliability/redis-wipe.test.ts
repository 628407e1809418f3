/**
 * Invariant 5: Kafka is the source of truth. Redis loses every key of the pipeline (state, dedupe ids,
 * ledger) in the middle of the stream; the processor detects it, replays from Kafka, and every hour is
 * accepted exactly once with the correct total, without a single DuplicateRecord.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { type RunningPipeline, startPipeline } from '../../src/pipeline.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { syntheticEvents } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { deleteKeys, testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  awsIdOf,
  expectedAccepted,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);

describe('Redis wiped mid-stream', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('replays from Kafka and bills every hour exactly once', async () => {
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    tp = testPipeline('wipe', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
    const now = Date.now();
    const all = [
      ...syntheticEvents({
        count: 6_000,
        customers: tenants,
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: now,
        duplicateRate: 0.02,
        seed: 11,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const lastHour = hourStart(now) - HOUR_MS;
    const before = all.filter((e) => Date.parse(String(e.timestamp)) < lastHour);
    const after = all.filter((e) => Date.parse(String(e.timestamp)) >= lastHour);
    const accepted = () =>
      new Map(
        emulator?.state
          .snapshot()
          .records.map((r) => [`${r.customer}|${r.dimension}|${r.timestamp}`, r.quantity]),
      );

    await tp.createTopics(kafka);
    await produceMessages(before.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
    });
    const firstPart = expectedAccepted(before);
    await waitFor(() => (accepted().size >= firstPart.size ? true : undefined), { timeoutMs: 60_000 });
    expect(accepted()).toEqual(firstPart);

    // Every key of this pipeline is gone: windows, checkpoints, fences, dedupe ids, ledger.
    await deleteKeys(tp.run);
    await produceMessages(after.map(eventMessage), { kafka, topic: tp.topics.usage });

    const expected = expectedAccepted(all);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().size} of ${expected.size} accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(pipeline.processor?.stats.replays).toBeGreaterThanOrEqual(1);
    expect(pipeline.processor?.app.stats.stateLosses).toBeGreaterThanOrEqual(1);
  });
});
