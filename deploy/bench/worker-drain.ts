/**
 * The worker's drain benchmark (a phase of `npm run bench`, or on its own with
 * `node deploy/bench/worker-drain.ts [--records N]`): N pending records (default 60,000) on the
 * submission topic, drained by one worker against the emulator at AWS's 10 TPS quota. The ideal is
 * 250 records/s (10 calls × 25 records); the goal is 95 % of it, with full batches.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startPipeline } from '../../src/app/pipeline.ts';
import { loadConfig } from '../../src/config/config.ts';
import { startEmulator } from '../../src/emulator/server.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ensureTopics } from '../../src/kafka/topics.ts';
import { createLogger } from '../../src/log.ts';
import { makeSubmissionRecord } from '../../src/metering/submission-record.ts';
import { produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import {
  configFiles,
  deleteKeysUnder,
  emulatorCredentials,
  emulatorEnv,
  type PhaseOptions,
} from './phase.ts';

export const DRAIN_IDEAL_PER_SEC = 250;
export const DRAIN_GOAL = 0.95;

export interface DrainResult {
  records: number;
  /** From the first accepted record to the last. */
  seconds: number;
  /** From starting the worker to its first accepted record (group join). */
  startupSeconds: number;
  recordsPerSec: number;
  /** recordsPerSec / 250. */
  ofIdeal: number;
  calls: number;
  meanBatch: number;
  /** ThrottlingException answers the emulator gave (the shared rate limiter should keep this near 0). */
  throttled: number;
}

export async function runWorkerDrain(o: PhaseOptions & { records: number }): Promise<DrainResult> {
  const say = o.say ?? (() => {});
  emulatorCredentials();
  const logger = createLogger('bench-drain', 'warn');
  const kafka = createKafka({ brokers: o.brokers.split(','), clientId: `${o.runId}-drain`, logger });
  const customers = 1_000;
  const accounts = Array.from({ length: customers }, (_, i) => String(200_000_000_000 + i));
  const emulator = await startEmulator({ customers: accounts, tps: 10 });
  const files = configFiles('meterline-drain-');
  const file = files.file;
  const topic = `${o.runId}-drain-submissions`;
  const prefix = `${o.runId}-drain`;
  const env = {
    ...emulatorEnv(o, emulator.url),
    METERLINE_PLAN: file('plan.json', { productCode: 'prod-bench', dimensions: [{ name: 'd0' }] }),
    METERLINE_CUSTOMERS: file(
      'customers.json',
      Object.fromEntries(
        accounts.map((a, i) => [
          `c${i}`,
          { customerAwsAccountId: a, licenseArn: `arn:aws:license-manager::${a}:license:l-${i}` },
        ]),
      ),
    ),
    METERLINE_TOPIC_SUBMISSIONS: topic,
    METERLINE_TOPIC_FAILED: `${o.runId}-drain-failed`,
    METERLINE_TOPIC_USAGE: `${o.runId}-drain-usage`,
    METERLINE_TOPIC_CHANGELOG: `${o.runId}-drain-changelog`,
    METERLINE_REDIS_PREFIX: prefix,
    METERLINE_WORKER_GROUP: `${o.runId}-drain-worker`,
    LOG_LEVEL: 'warn',
    METERLINE_OPS_PORT: 'off',
  };
  const admin = kafka.admin();
  await admin.connect();
  const redis = new Redis(o.redisUrl);
  try {
    await ensureTopics(kafka, [
      { topic, numPartitions: 6 },
      { topic: env.METERLINE_TOPIC_FAILED, numPartitions: 1 },
    ]);
    // Pending records: distinct (customer, dimension, hour), inside AWS's 24 h window.
    const now = Date.now();
    const dims = 5;
    const hours = Math.ceil(o.records / (customers * dims));
    if (hours > 20) throw new Error('--records: at most 100,000 (20 hours × 1,000 customers × 5 dimensions)');
    const records = Array.from({ length: o.records }, (_, i) =>
      makeSubmissionRecord({
        productCode: 'prod-bench',
        customer: `c${i % customers}`,
        dimension: `d${Math.floor(i / customers) % dims}`,
        hourMs: hourStart(now) - (1 + Math.floor(i / (customers * dims))) * HOUR_MS,
        quantity: 1 + (i % 50),
        api: 'BatchMeterUsage',
        finalizedAtMs: now,
      }),
    );
    await produceMessages(
      records.map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      { kafka, topic },
    );
    say(
      `  ${records.length.toLocaleString('en-US')} pending records on ${topic}; draining at the 10 TPS quota`,
    );
    const started = performance.now();
    const pipeline = await startPipeline(loadConfig(['worker'], env), logger, {
      processor: false,
      worker: true,
    });
    let accepted = 0;
    let firstAt: number | undefined;
    try {
      for (let last = 0, stalled = 0; accepted < records.length; ) {
        await sleep(100);
        accepted = emulator.state.snapshot().records.length;
        if (accepted > 0) firstAt ??= performance.now();
        stalled = accepted === last ? stalled + 1 : 0;
        last = accepted;
        if (stalled > 600) throw new Error(`drain stalled at ${accepted} of ${records.length} records`);
      }
    } finally {
      await pipeline.stop();
    }
    const ended = performance.now();
    // The drain rate, from the first accepted call to the last (start-up is reported on its own).
    const seconds = (ended - (firstAt ?? started)) / 1000;
    const startupSeconds = ((firstAt ?? ended) - started) / 1000;
    const snap = emulator.state.snapshot();
    const calls = pipeline.worker?.stats.calls ?? 0;
    const recordsPerSec = records.length / seconds;
    return {
      records: records.length,
      seconds,
      startupSeconds,
      recordsPerSec,
      ofIdeal: recordsPerSec / DRAIN_IDEAL_PER_SEC,
      calls,
      meanBatch: records.length / Math.max(1, calls),
      throttled: snap.throttled.BatchMeterUsage ?? 0,
    };
  } finally {
    await admin
      .deleteTopics({
        topics: [topic, env.METERLINE_TOPIC_FAILED, env.METERLINE_TOPIC_USAGE, env.METERLINE_TOPIC_CHANGELOG],
      })
      .catch(() => {});
    await admin.disconnect();
    await deleteKeysUnder(redis, prefix);
    redis.disconnect();
    await emulator.close();
    files.remove();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { records: { type: 'string' } } });
  const { ensureServices } = await import('../stack/index.ts');
  const { env } = await ensureServices(['kafka', 'redis']);
  const result = await runWorkerDrain({
    brokers: env.KAFKA_BROKERS as string,
    redisUrl: env.REDIS_URL as string,
    runId: `drain-${Date.now().toString(36)}`,
    records: Number(values.records ?? 60_000),
    say: (l) => process.stdout.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
