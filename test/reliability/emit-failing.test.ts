/**
 * An emit that keeps failing is never silent (issue 14, item 8). The submission topic is deleted under a
 * running processor (the broker creates no topic by itself), so every emit of a frozen hour fails.
 *
 * 1. While the hour waits for its emit, its frozen records do not expire (no TTL: Redis's TTLs run on its
 *    own clock, so the test reads the TTL rather than waiting 48 h), and the pending hours show on
 *    /metrics. The processor's clock then moves to a minute past the hour's AWS deadline minus
 *    METERLINE_SUBMIT_MARGIN (the default): every record of the hour is dead-lettered (stage commit,
 *    reason emit_failed) with its frozen quantity, the hour stops waiting and only then starts to expire.
 *    Once the topic is back, a redrive bills every record at AWS (the emulator) with its exact quantity.
 * 2. A waiting hour whose frozen records are gone anyway (expired under an older version, evicted,
 *    deleted by hand) is never marked emitted with 0 records in silence: it is dead-lettered as
 *    frozen_hour_lost.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { readDlq, redrive } from '../../src/dlq/redrive.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import { acceptanceDeadline } from '../../src/metering/aws-window.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import type { SubmissionRecord } from '../../src/metering/submission-record.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import {
  deleteTopics,
  failedRecordValidator,
  stackEnv,
  testKafka,
  testLogger,
  waitFor,
} from '../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  expectedFrozen,
  frozenRecords,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);
const PARTITIONS = 3;

/** Prometheus text format → `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

async function topicExists(topic: string): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.listTopics()).includes(topic);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Deletes the submission topic once the broker lists it (a topic still being created is not listed yet,
 * and would be missed by the delete), and waits until it is gone.
 */
async function deleteSubmissionsTopic(topic: string): Promise<void> {
  await waitFor(async () => ((await topicExists(topic)) ? true : undefined), {
    describe: () => `${topic} not listed yet`,
  });
  await deleteTopics(kafka, [topic]);
  await waitFor(async () => ((await topicExists(topic)) ? undefined : true), {
    describe: () => `${topic} still listed`,
  });
}

function usage(prefix: string, hour: number, count: number): RawEvent[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}-${i}`,
    customer: tenants[i % tenants.length] as string,
    dimension: i % 3 === 0 ? 'jobs' : 'api_calls',
    quantity: 1 + (i % 5),
    timestamp: new Date(hour + ((i * 37_000) % HOUR_MS)).toISOString(),
  }));
}

/** The partition → pending-emit hours of the run, read from Redis. */
async function pendingEmits(redis: Redis, keys: Keys, topic: string): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>();
  for (let partition = 0; partition < PARTITIONS; partition++) {
    const hours = await redis.zrange(keys.partition({ topic, partition }).pendingEmit(), '0', '-1');
    if (hours.length) out.set(partition, hours.map(Number));
  }
  return out;
}

const commitEntries = (entries: FailedRecord[]) => entries.filter((e) => e.stage === 'commit');

describe('an hour whose emit keeps failing', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  let worker: RunningPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  const redis = new Redis(stackEnv().redisUrl);
  afterAll(async () => {
    // Topics back first: a producer stuck on one must be able to finish before the stop.
    if (tp) await tp.createTopics(kafka);
    await pipeline?.stop();
    await worker?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('keeps its frozen records, dead-letters them before the AWS deadline, and a redrive bills them', async () => {
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    tp = testPipeline('emit-failing', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
    const topics = tp.topics;
    const keys = new Keys(tp.run);
    await tp.createTopics(kafka);
    // The processor's clock: moved forward later, as if the topic stayed gone for most of a day.
    let skewMs = 0;
    const now = () => Date.now() + skewMs;
    const config = tp.config(['processor']);
    pipeline = await startPipeline(config, testLogger(), { processor: true, worker: false, now });
    const ops = `http://127.0.0.1:${pipeline.ops?.port}`;
    const scrape = async () => parseMetrics(await (await fetch(`${ops}/metrics`)).text());

    await deleteSubmissionsTopic(topics.submissions);

    const hour = hourStart(Date.now()) - HOUR_MS;
    const events = usage(tp.run, hour, 120);
    await produceMessages(events.map(eventMessage), { kafka, topic: topics.usage });
    const truth = expectedFrozen(events);
    const partitions = new Set(tenants.map((t) => partitionOfCustomer(t, PARTITIONS)));

    // The hour closes and freezes, and waits for its emit.
    await waitFor(
      async () => {
        const p = await pendingEmits(redis, keys, topics.usage);
        return [...p.values()].some((hours) => hours.includes(hour)) ? p : undefined;
      },
      {
        timeoutMs: 90_000,
        describe: async () =>
          `pending emits: ${JSON.stringify([...(await pendingEmits(redis, keys, topics.usage))])}`,
      },
    );
    // Not one attempt: the emit failed, and was tried again, with the hour still waiting.
    await waitFor(
      async () =>
        ((await scrape()).get(
          `meterline_produce_failures_total{producer="commit",topic="${topics.submissions}"}`,
        ) ?? 0) >= 2
          ? true
          : undefined,
      { timeoutMs: 90_000, describe: () => 'fewer than 2 failed emits counted' },
    );
    const waiting = await pendingEmits(redis, keys, topics.usage);
    expect(waiting.size).toBeGreaterThan(0);

    // While the hour waits for its emit, its frozen records never expire.
    for (const [partition, hours] of waiting) {
      expect(hours).toEqual([hour]);
      const fin = keys.partition({ topic: topics.usage, partition }).finalized(hour);
      expect.soft(await redis.exists(fin), `${fin} exists`).toBe(1);
      expect.soft(await redis.ttl(fin), `TTL of ${fin} while its emit is pending`).toBe(-1);
    }
    // And the hours waiting show on /metrics, with their age.
    await waitFor(
      async () => {
        const m = await scrape();
        const shown = [...partitions].reduce(
          (sum, p) => sum + (m.get(`meterline_pending_emit_hours{partition="${p}"}`) ?? 0),
          0,
        );
        return shown > 0 ? m : undefined;
      },
      { timeoutMs: 30_000, describe: () => 'meterline_pending_emit_hours does not show the waiting hours' },
    ).then(
      (m) =>
        expect.soft(m.get('meterline_oldest_pending_emit_hour_age_seconds')).toBeGreaterThan(HOUR_MS / 1000),
      (error: unknown) => expect.soft(String(error)).toBe('the pending hours on /metrics'),
    );
    // Nothing is dead-lettered while the deadline is far.
    expect(commitEntries((await readDlq(kafka, topics.failed)).map((e) => e.envelope))).toEqual([]);

    // A minute past the hour's deadline minus the submit margin (the default, 1 h): AWS's deadline is at
    // risk, so the hour goes to the failed-records topic rather than wait any longer.
    const riskAt = acceptanceDeadline(config.worker.api, hour) - config.window.submitMarginMs;
    skewMs = riskAt + 60_000 - Date.now();
    const validate = failedRecordValidator();
    const dead = await waitFor(
      async () => {
        const entries = (await readDlq(kafka, topics.failed)).filter((e) => e.envelope.stage === 'commit');
        return entries.length >= truth.size ? entries : undefined;
      },
      {
        timeoutMs: 90_000,
        describe: () => `fewer than ${truth.size} records dead-lettered by the commit stage`,
      },
    );
    for (const { envelope } of dead) {
      expect(validate(envelope), JSON.stringify(validate.errors)).toBe(true);
      expect(envelope).toMatchObject({ stage: 'commit', reason: 'emit_failed', retriable: true });
      expect(envelope.lastError?.code).toBe('kafka_error');
      expect(envelope.deadline).toBe(envelope.record?.deadline);
    }
    const deadRecords = new Map(
      dead.map(({ envelope }) => [envelope.record?.recordId, envelope.record as SubmissionRecord]),
    );
    expect(new Map([...deadRecords].map(([id, r]) => [id, r.quantity]))).toEqual(truth);
    expect(dead.length).toBe(truth.size);

    // The hour no longer waits, and only now does its frozen state start to expire.
    await waitFor(
      async () => ((await pendingEmits(redis, keys, topics.usage)).size === 0 ? true : undefined),
      {
        describe: async () =>
          `still pending: ${JSON.stringify([...(await pendingEmits(redis, keys, topics.usage))])}`,
      },
    );
    for (const partition of partitions) {
      const ttl = await redis.ttl(keys.partition({ topic: topics.usage, partition }).finalized(hour));
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(48 * 3600);
    }
    const after = await waitFor(async () => {
      const m = await scrape();
      return m.get('meterline_oldest_pending_emit_hour_age_seconds') === 0 ? m : undefined;
    });
    expect(after.get('meterline_dead_letters_total{stage="commit",reason="emit_failed"}')).toBe(truth.size);

    // The topic is back: a redrive puts every record on it, and the worker bills each one once.
    await tp.createTopics(kafka);
    const producer = kafka.producer();
    const scripted = createRedis(stackEnv().redisUrl);
    await producer.connect();
    try {
      for (const entry of dead) {
        const outcome = await redrive(entry, {
          kafka,
          producer,
          redis: scripted,
          keys,
          dlqTopic: topics.failed,
          topics,
          api: config.worker.api,
          marginMs: 5 * 60_000,
          dryRun: false,
          now,
        });
        expect(outcome).toEqual({ kind: 'redriven', to: topics.submissions });
      }
    } finally {
      await producer.disconnect();
      scripted.disconnect();
    }
    const resent = frozenRecords(await readAllMessages(kafka, topics.submissions));
    expect(new Map([...resent].map(([id, r]) => [id, r.quantity]))).toEqual(truth);

    worker = await startPipeline(tp.config(['worker']), testLogger(), {
      processor: false,
      worker: true,
      now,
    });
    const expected = expectedAccepted(events);
    const accepted = () => acceptedAtAws(emulator);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 90_000,
      describe: () => `${accepted().size} of ${expected.size} records accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
  }, 420_000);
});

describe('a waiting hour whose frozen records are gone', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  const redis = new Redis(stackEnv().redisUrl);
  afterAll(async () => {
    if (tp) await tp.createTopics(kafka);
    await pipeline?.stop();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('is dead-lettered as frozen_hour_lost, never marked emitted with 0 records in silence', async () => {
    tp = testPipeline('emit-lost');
    const topics = tp.topics;
    const keys = new Keys(tp.run);
    await tp.createTopics(kafka);
    pipeline = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
    });
    await deleteSubmissionsTopic(topics.submissions);

    const hour = hourStart(Date.now()) - HOUR_MS;
    const events = usage(tp.run, hour, 60);
    await produceMessages(events.map(eventMessage), { kafka, topic: topics.usage });
    const pending = await waitFor(
      async () => {
        const p = await pendingEmits(redis, keys, topics.usage);
        return [...p].find(([, hours]) => hours.includes(hour));
      },
      { timeoutMs: 90_000, describe: () => 'the hour is pending nowhere' },
    );

    // One partition's frozen hour disappears while it waits (as a TTL running out would make it).
    const lost = pending[0];
    await redis.del(keys.partition({ topic: topics.usage, partition: lost }).finalized(hour));
    const lostTenants = new Set(tenants.filter((t) => partitionOfCustomer(t, PARTITIONS) === lost));
    const kept = events.filter((e) => !lostTenants.has(e.customer));
    // The next attempt finds it gone (an attempt under way when it went may still hold its records, and
    // must fail before the topic comes back).
    await waitFor(
      async () =>
        (await pendingEmits(redis, keys, topics.usage)).get(lost)?.includes(hour) ? undefined : true,
      { timeoutMs: 60_000, describe: () => `partition ${lost} still waits with its hour` },
    );

    await tp.createTopics(kafka);
    // The other partitions' records reach the submission topic as they are.
    const truth = expectedFrozen(kept);
    await waitFor(
      async () =>
        frozenRecords(await readAllMessages(kafka, topics.submissions)).size >= truth.size ? true : undefined,
      { timeoutMs: 90_000, describe: () => 'the kept hours were not emitted' },
    );
    await waitFor(
      async () => ((await pendingEmits(redis, keys, topics.usage)).size === 0 ? true : undefined),
      {
        timeoutMs: 60_000,
        describe: () => 'hours still pending',
      },
    );
    const submitted = frozenRecords(await readAllMessages(kafka, topics.submissions));
    expect(new Map([...submitted].map(([id, r]) => [id, r.quantity]))).toEqual(truth);

    // The lost one is on the failed-records topic: loud, with where and which hour.
    const dead = await waitFor(
      async () => {
        const entries = commitEntries((await readDlq(kafka, topics.failed)).map((e) => e.envelope));
        return entries.length ? entries : undefined;
      },
      { timeoutMs: 30_000, describe: () => 'nothing on the failed-records topic for the lost hour' },
    );
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ stage: 'commit', reason: 'frozen_hour_lost', retriable: false });
    expect(dead[0]?.detail).toContain(`${topics.usage}/${lost}`);
    expect(dead[0]?.detail).toContain(hourIso(hour));
    const validate = failedRecordValidator();
    expect(validate(dead[0]), JSON.stringify(validate.errors)).toBe(true);
  }, 300_000);
});
