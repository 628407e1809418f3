/**
 * Recovery time after a total Redis loss: `npm run bench:recovery [-- --events 1000000]`.
 *
 * Produces the benchmark's dataset (events over the last closed hours), runs the processor until every
 * event is applied and the closed hours are frozen and emitted (so the window changelog holds them), then
 * deletes every Redis key of the run and measures how long the processor takes to notice, rebuild the
 * frozen hours and model state from the changelog, and replay the usage topic up to where it stood: the
 * time during which no hour of those partitions can close. Prints the figures and the time per million
 * events. A measurement, not a test: nothing here asserts a duration.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { CompressionTypes, Kafka, logLevel } from 'kafkajs';
import { startPipeline } from '../../src/app/pipeline.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/log.ts';
import { ensureServices } from '../stack/index.ts';
import { Dataset } from './dataset.ts';

const PARTITIONS = 6;
const say = (line: string) => process.stdout.write(`${line}\n`);
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 1_800_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const { values } = parseArgs({ options: { events: { type: 'string', default: '1000000' } }, strict: true });
const messages = Number(values.events);
if (!Number.isSafeInteger(messages) || messages < 1_000)
  throw new Error('--events must be an integer ≥ 1000');

const stack = await ensureServices(['kafka', 'redis'], { log: (line) => say(`  ${line}`) });
const brokers = stack.env.KAFKA_BROKERS as string;
const redisUrl = stack.env.REDIS_URL as string;
const runId = `recovery-${randomBytes(3).toString('hex')}`;
const env: Record<string, string> = {
  KAFKA_BROKERS: brokers,
  REDIS_URL: redisUrl,
  AWS_REGION: 'us-east-1',
  METERLINE_PLAN: fileURLToPath(new URL('./plan.json', import.meta.url)),
  METERLINE_TOPIC_USAGE: `${runId}-usage`,
  METERLINE_TOPIC_SUBMISSIONS: `${runId}-submissions`,
  METERLINE_TOPIC_FAILED: `${runId}-failed`,
  METERLINE_TOPIC_CHANGELOG: `${runId}-changelog`,
  METERLINE_TOPIC_PARTITIONS: String(PARTITIONS),
  METERLINE_REDIS_PREFIX: runId,
  METERLINE_PROCESSOR_GROUP: `${runId}-processor`,
  METERLINE_OPS_PORT: 'off',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'error',
};
const kafka = new Kafka({ clientId: runId, brokers: brokers.split(','), logLevel: logLevel.ERROR });
const redis = new Redis(redisUrl);
const admin = kafka.admin();
await admin.connect();
const config = loadConfig(['processor'], env);
let pipeline: Awaited<ReturnType<typeof startPipeline>> | undefined;
try {
  await admin.createTopics({
    waitForLeaders: true,
    topics: [{ topic: config.topics.usage, numPartitions: PARTITIONS }],
  });
  const dataset = new Dataset({
    messages,
    customers: 1_000,
    dimensions: ['api_calls', 'jobs', 'egress_gb', 'compute_min', 'seats'],
    hours: 3,
    nowMs: Date.now(),
    duplicateRate: 0.01,
    seed: 5,
  });
  say(`== producing ${fmt(messages)} events over the last 3 closed hours`);
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  for (const chunk of dataset.chunks(5_000)) {
    await producer.sendBatch({
      topicMessages: [{ topic: config.topics.usage, messages: chunk }],
      acks: -1,
      compression: CompressionTypes.None,
    });
  }
  await producer.disconnect();

  say('== processing, and freezing the closed hours');
  const t0 = Date.now();
  pipeline = await startPipeline(config, createLogger('recovery', env.LOG_LEVEL), {
    processor: true,
    worker: false,
  });
  const running = pipeline;
  const ends = new Map(
    (await admin.fetchTopicOffsets(config.topics.usage)).map((o) => [o.partition, BigInt(o.high)]),
  );
  const caughtUp = async () => {
    const tasks = (await running.processor?.app.tasks()) ?? [];
    if (tasks.length < ends.size) return undefined;
    for (const t of tasks) {
      const end = ends.get(t.id.partition) ?? 0n;
      const { checkpoint, holdUntil } = t.restorePoint;
      if (end > 0n && (checkpoint === undefined || checkpoint + 1n < end)) return undefined;
      if (holdUntil !== undefined && (checkpoint ?? -1n) + 1n < holdUntil) return undefined;
    }
    return true;
  };
  await until('the first pass', caughtUp);
  const firstSeconds = (Date.now() - t0) / 1000;
  // Every closed hour with usage on every partition (3 hours × 6 partitions) frozen and emitted.
  await until('the closed hours', async () =>
    (running.processor?.commitStage.stats.hoursFinalized ?? 0) >= 3 * PARTITIONS ? true : undefined,
  );
  say(`  first pass: ${fmt(messages)} events in ${firstSeconds.toFixed(1)} s`);

  say('== deleting every Redis key of the run');
  const replays = () => running.processor?.stats.replays ?? 0;
  const before = replays();
  let cursor = '0';
  const w0 = Date.now();
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${runId}:*`, 'COUNT', 5000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
  await until('the loss to be noticed', async () => (replays() >= before + PARTITIONS ? true : undefined));
  const noticed = (Date.now() - w0) / 1000;
  await until('the replay', caughtUp);
  const total = (Date.now() - w0) / 1000;
  let frozen = 0;
  let scan = '0';
  do {
    const [next, keys] = await redis.scan(scan, 'MATCH', `${runId}:*:fin:*`, 'COUNT', 5000);
    scan = next;
    frozen += keys.length;
  } while (scan !== '0');
  say(`  noticed and rebuilt from the changelog in ${noticed.toFixed(1)} s (all ${PARTITIONS} partitions)`);
  say(`  replayed ${fmt(messages)} events; hours closable again after ${total.toFixed(1)} s`);
  say(`  frozen hours in Redis after the rebuild: ${frozen} (${3 * PARTITIONS} before the loss)`);
  say(`  recovery per million events: ${((total / messages) * 1_000_000).toFixed(1)} s`);
} finally {
  await pipeline?.stop();
  const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${runId}-`));
  if (topics.length) await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.deleteGroups([`${runId}-processor`]).catch(() => undefined);
  await admin.disconnect();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${runId}:*`, 'COUNT', 5000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
  redis.disconnect();
}
