/**
 * The submission backlog from Kafka (issue 18): with the processor running and no worker at all, the
 * frozen records wait on the submission topic, and the backlog monitor reports how many, how long the
 * oldest has waited and how long until its AWS deadline, read from Kafka alone. Once a worker consumes
 * them, the backlog is empty. Ground truth: the submission topic itself, read here.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { acceptanceDeadline } from '../../../src/metering/aws-window.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import { BacklogMonitor } from '../../../src/reconcile/backlog.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../../support/harness.ts';
import {
  expectedFrozen,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();

describe('submission backlog', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let monitor: BacklogMonitor | undefined;
  const pipelines: RunningPipeline[] = [];
  afterAll(async () => {
    await monitor?.stop();
    for (const p of pipelines) await p.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('counts the records waiting with no worker, their age and deadline, and nothing once consumed', async () => {
    const now = Date.now();
    emulator = await startEmulator({
      customers: Object.values(TEST_CUSTOMERS).map((c) =>
        'customerAwsAccountId' in c ? c.customerAwsAccountId : c.customerIdentifier,
      ),
    });
    tp = testPipeline('backlog', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
    const config = tp.config();
    const events = [
      ...syntheticEvents({
        count: 300,
        customers: Object.keys(TEST_CUSTOMERS),
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: now,
        seed: 5,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const truth = expectedFrozen(events);
    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipelines.push(await startPipeline(config, testLogger(), { processor: true, worker: false }));
    const waiting = await waitFor(async () => {
      const m = await readAllMessages(kafka, config.topics.submissions);
      return m.length >= truth.size ? m : undefined;
    });

    const at = Date.now() + 60_000;
    monitor = new BacklogMonitor({
      kafka,
      submissionsTopic: config.topics.submissions,
      failedTopic: config.topics.failed,
      workerGroup: config.groups.worker,
      logger: testLogger(),
      intervalMs: 3_600_000,
      now: () => at,
    });
    await monitor.start();
    const firsts = new Map<number, (typeof waiting)[number]>();
    for (const m of waiting) {
      const f = firsts.get(m.partition);
      if (!f || BigInt(m.offset) < BigInt(f.offset)) firsts.set(m.partition, m);
    }
    const oldestHour = Math.min(
      ...[...firsts.values()].map((m) => Date.parse(JSON.parse(String(m.value)).hour)),
    );
    expect(oldestHour).toBe(hourStart(now) - 3 * HOUR_MS);
    const backlog = await monitor.check();
    expect(backlog.records).toBe(waiting.length);
    expect(backlog.oldestAgeSeconds).toBe(
      Math.max(...[...firsts.values()].map((m) => (at - Number(m.timestamp)) / 1000)),
    );
    expect(backlog.deadlineSeconds).toBe((acceptanceDeadline('BatchMeterUsage', oldestHour) - at) / 1000);
    expect(backlog.failedTopicMessages).toBe(0);

    // A worker comes and consumes them all: the backlog empties.
    pipelines.push(await startPipeline(config, testLogger(), { processor: false, worker: true }));
    const empty = await waitFor(async () => {
      const b = await monitor?.check();
      return b?.records === 0 ? b : undefined;
    });
    expect(empty).toEqual({
      records: 0,
      oldestAgeSeconds: 0,
      deadlineSeconds: undefined,
      failedTopicMessages: 0,
    });
  }, 240_000);
});
