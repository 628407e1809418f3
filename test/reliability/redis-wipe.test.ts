/**
 * Invariant 5: Kafka is the source of truth. Redis loses every key of the pipeline (state, dedupe ids,
 * ledger) in the middle of the stream; the processor detects it, replays from Kafka, and every hour is
 * accepted exactly once with the correct total, without a single DuplicateRecord.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { changelogTopic, ensureTopics } from '../../src/kafka/topics.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { syntheticEvents } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { deleteKeys, deleteTopics, stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  frozenRecords,
  readAllMessages,
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
    // METERLINE_WINDOW_MAX_DELAY at its default: the test harness's longer one would hide early closes.
    tp = testPipeline('wipe', {
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_WINDOW_MAX_DELAY: '3h' },
    });
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
    const accepted = () => acceptedAtAws(emulator);

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

  it('replays hours that aged past the max delay without closing them halfway', async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    tp = testPipeline('wipe-aged', {
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_WINDOW_MAX_DELAY: '3h' },
    });
    // Usage of the hours 5 and 4 hours back, processed while they were young (the processor's clock runs
    // 2.5 h behind), so each hour froze whole on event time. By the time Redis is wiped they are older
    // than the default max delay: the replay must not close them after its first batch.
    const real = hourStart(Date.now());
    let behind = 2.5 * HOUR_MS;
    const now = () => Date.now() - behind;
    const all = [
      ...syntheticEvents({
        count: 60_000,
        customers: tenants,
        dimensions: ['api_calls', 'jobs'],
        hours: 2,
        nowMs: real - 3 * HOUR_MS,
        duplicateRate: 0.02,
        seed: 12,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const accepted = () => acceptedAtAws(emulator);
    await tp.createTopics(kafka);
    await produceMessages(all.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true, now });
    const expected = expectedAccepted(all);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), { timeoutMs: 120_000 });
    expect(accepted()).toEqual(expected);

    // Without the window changelog (hours frozen by a version before it, or the topic lost too), the replay
    // alone rebuilds the hours: it must refreeze each one whole.
    const changelog = tp.topics.changelog;
    await deleteTopics(kafka, [changelog]);
    const admin = kafka.admin();
    await admin.connect();
    await waitFor(async () => ((await admin.listTopics()).includes(changelog) ? undefined : true));
    await admin.disconnect();
    await waitFor(() =>
      ensureTopics(kafka, [changelogTopic(changelog, 3)]).then(
        () => true,
        () => undefined,
      ),
    );
    await deleteKeys(tp.run);
    behind = 0;
    // Every hour is frozen again from the whole replay: the same quantities, which AWS takes as the same
    // records; a record frozen from part of an hour would come back as DuplicateRecord.
    const replays = () => pipeline?.processor?.stats.replays ?? 0;
    await waitFor(() => (replays() >= 1 ? true : undefined), { timeoutMs: 60_000 });
    const submissions = tp.topics.submissions;
    await waitFor(
      async () => {
        const messages = await readAllMessages(kafka, submissions);
        // Throws if a record id came back with another quantity.
        const frozen = frozenRecords(messages);
        return frozen.size === expected.size && messages.length >= 2 * expected.size ? true : undefined;
      },
      { timeoutMs: 180_000 },
    );
    // The worker (its ledger wiped too) has had every re-emitted record accepted again.
    const redis = createRedis(stackEnv().redisUrl);
    try {
      const pattern = new Keys(tp.run).ledger('*');
      await waitFor(async () => {
        let n = 0;
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          cursor = next;
          n += keys.length;
        } while (cursor !== '0');
        return n >= expected.size ? true : undefined;
      });
    } finally {
      redis.disconnect();
    }
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
  }, 400_000);
});
