/**
 * Close-to-accepted latency (a phase of `npm run bench`, or on its own with
 * `node deploy/bench/close-latency.ts [--customers 1000]`): per record, the wall time from the moment its
 * hour became closable to the moment AWS (the in-process emulator, no quota) accepted it. Goal: p99 ≤ 2 s.
 *
 * One pipeline with every role (`startPipeline`: processor, commit stage, worker) on the pipeline's DEFAULT
 * settings (grace, out-of-orderness, idle timeout, commit interval, worker batching), and a simulated clock
 * shared with the emulator, as the e2e tests run it. One setting is not the default: "without a quota"
 * holds on both sides, so meterline's shared rate limiter (METERLINE_RATE_LIMIT, 10 calls/s by default,
 * AWS's quota) is raised to its maximum; the time the default limit needs for the same calls is reported
 * beside the figure. Customers × 5 dimensions of usage in one hour, each customer mapped in the customers
 * file and subscribed at the emulator. Once every event is applied, the clock jumps to a commit interval
 * and a second before the first instant the product's own rule (`closeBoundary`) lets the hour close:
 * end + grace + out-of-orderness, the partitions being idle. From there the clock runs at real speed, as
 * in production, where the commit stage sees the clock approach that instant (a jump straight onto it
 * would hide it); the emulator's `acceptedAt` minus that instant is wall time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startPipeline } from '../../src/app/pipeline.ts';
import { closeBoundary } from '../../src/commit/close-boundary.ts';
import { loadConfig } from '../../src/config/config.ts';
import { startEmulator } from '../../src/emulator/server.ts';
import { createKafka, idempotentProducer } from '../../src/kafka/client.ts';
import { readAllMessages } from '../../src/kafka/read-topic.ts';
import { ensureTopics, pipelineTopics } from '../../src/kafka/topics.ts';
import { createLogger } from '../../src/log.ts';
import { parseSubmissionRecord } from '../../src/metering/submission-record.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import {
  configFiles,
  deleteKeysUnder,
  emulatorCredentials,
  emulatorEnv,
  type PhaseOptions,
} from './phase.ts';
import { fmt } from './report-format.ts';

export const LATENCY_GOAL_P99_SECONDS = 2;
/** AWS's quota and meterline's default shared rate limit (calls/s): the quota-bound figure uses it. */
const DEFAULT_RATE_LIMIT = 10;
/** The phase's own limit: METERLINE_RATE_LIMIT's maximum, so the limiter stands for no quota. */
const UNLIMITED_RATE = 1_000;
const DIMENSIONS = ['api_calls', 'jobs', 'egress_gb', 'compute_min', 'seats'];

export interface LatencyResult {
  records: number;
  customers: number;
  dimensions: number;
  /** Seconds from the hour becoming closable to each record's acceptance. */
  p50Seconds: number;
  p99Seconds: number;
  maxSeconds: number;
  minSeconds: number;
  /** From closable until the commit stage had frozen its first hour (polled): mostly the wait for its tick. */
  firstFrozenSeconds: number;
  /** From closable until the commit stage had emitted every record to the submission topic (polled). */
  emittedSeconds: number;
  /** The commit stage's punctuations during the run, those at a predicted close, and the predictions missed. */
  punctuations: number;
  predictedLooks: number;
  missedLooks: number;
  /**
   * Redis round trips per commit-stage punctuation, the pipeline otherwise quiet (after every record was
   * accepted; the processor's state check, a few calls every 5 s, is counted in too).
   */
  roundTripsPerTick: number;
  /** The settings that shape the figure, as loaded (defaults). */
  settings: {
    graceMs: number;
    maxOutOfOrdernessMs: number;
    commitIntervalMs: number;
    rateLimitPerSec: number;
    api: string;
  };
  /**
   * The worker's share: per record, from its message's append on the submission topic (the producer's
   * timestamp, on the same clock) to its acceptance, p50 and p99 seconds.
   */
  workerP50Seconds: number;
  workerP99Seconds: number;
  workerCalls: number;
  /**
   * CPU of this process (pipeline, emulator and bench, one event loop) over wall time, from the first
   * freeze to the last acceptance: near 1 means the one thread was busy throughout.
   */
  cpuBusy: number;
  /** What the same calls need at the default shared rate limit (AWS's quota): calls / 10 s at least. */
  quotaBoundSeconds: number;
  /** ThrottlingException answers (the emulator has no quota here: 0 expected). */
  throttled: number;
  /** Every record accepted with the quantity produced. */
  verified: boolean;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/** Counts the Redis client's round trips (one per command sent alone, one per pipeline), as run-processor.ts. */
function countRoundTrips(): { readonly count: number; restore: () => void } {
  type Send = (this: Redis, command: unknown, stream?: object, ...rest: unknown[]) => unknown;
  const proto = Redis.prototype as unknown as { sendCommand: Send };
  const original = proto.sendCommand;
  const pipelines = new WeakSet<object>();
  const counter = {
    count: 0,
    restore: () => {
      proto.sendCommand = original;
    },
  };
  proto.sendCommand = function (this: Redis, command: unknown, stream?: object, ...rest: unknown[]) {
    if (stream === undefined) counter.count += 1;
    else if (!pipelines.has(stream)) {
      pipelines.add(stream);
      counter.count += 1;
    }
    return original.call(this, command, stream, ...rest);
  };
  return counter;
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 300_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`close latency: timed out waiting for ${what}`);
    await sleep(20);
  }
}

export async function runCloseLatency(o: PhaseOptions & { customers: number }): Promise<LatencyResult> {
  const say = o.say ?? (() => {});
  emulatorCredentials();
  // The hour of usage; the clock starts 50 minutes into it, so no event is from the future.
  const hourMs = hourStart(Date.now()) - HOUR_MS;
  let base = hourMs + 50 * 60_000;
  let setAt = Date.now();
  const now = () => base + (Date.now() - setAt);
  const setClock = (ms: number) => {
    base = ms;
    setAt = Date.now();
  };
  const accounts = Array.from({ length: o.customers }, (_, i) => String(300_000_000_000 + i));
  const license = (a: string, i: number) => `arn:aws:license-manager::${a}:license:l-${i}`;
  const emulator = await startEmulator({
    customers: accounts.map((id, i) => ({ id, licenseArn: license(id, i) })),
    now,
  });
  const files = configFiles('meterline-latency-');
  const file = files.file;
  const run = `${o.runId}-latency`;
  // Isolation (topics, groups, key prefix, files, no ops port) and no quota; every timing setting is the default.
  const env = {
    ...emulatorEnv(o, emulator.url),
    METERLINE_PLAN: file('plan.json', {
      productCode: 'prod-bench',
      dimensions: DIMENSIONS.map((name) => ({ name })),
    }),
    METERLINE_CUSTOMERS: file(
      'customers.json',
      Object.fromEntries(
        accounts.map((a, i) => [`c${i}`, { customerAwsAccountId: a, licenseArn: license(a, i) }]),
      ),
    ),
    METERLINE_TOPIC_USAGE: `${run}-usage`,
    METERLINE_TOPIC_SUBMISSIONS: `${run}-submissions`,
    METERLINE_TOPIC_FAILED: `${run}-failed`,
    METERLINE_TOPIC_CHANGELOG: `${run}-changelog`,
    METERLINE_REDIS_PREFIX: run,
    METERLINE_PROCESSOR_GROUP: `${run}-processor`,
    METERLINE_WORKER_GROUP: `${run}-worker`,
    METERLINE_OPS_PORT: 'off',
    METERLINE_RATE_LIMIT: String(UNLIMITED_RATE),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  };
  const config = loadConfig(['processor', 'worker'], env);
  const logger = createLogger('bench-latency', config.logLevel);
  const kafka = createKafka({ brokers: o.brokers.split(','), clientId: run, logger });
  const admin = kafka.admin();
  await admin.connect();
  const redis = new Redis(o.redisUrl);
  const roundTrips = countRoundTrips();
  let pipeline: Awaited<ReturnType<typeof startPipeline>> | undefined;
  try {
    await ensureTopics(kafka, pipelineTopics(config.topics));
    // The first clock instant at which the product's rule lets the hour close, all partitions idle.
    const end = hourMs + HOUR_MS;
    const closableAt = end + config.window.graceMs + config.window.maxOutOfOrdernessMs;
    // A partition caught up with its last event in the hour, applied at the clock's start: idle by then.
    const idle = [{ partition: 0, checkpoint: 0n, logEnd: 1n, maxEventTime: end - 1, activeAt: now() }];
    const boundary = (t: number) => closeBoundary(idle, t, config.window);
    if (boundary(closableAt) < end || boundary(closableAt - 1) >= end)
      throw new Error('close latency: the closable instant does not match closeBoundary');

    pipeline = await startPipeline(config, logger, { processor: true, worker: true, now });
    const running = pipeline;
    // The worker in its group before anything is closable, so its join is not part of the figure.
    await until('the worker to join its group', async () => {
      const [g] = (await admin.describeGroups([config.groups.worker])).groups;
      return g?.state === 'Stable' && g.members.length > 0 ? true : undefined;
    });
    const quantities = new Map<string, number>();
    const producer = idempotentProducer(kafka);
    await producer.connect();
    try {
      const messages = [];
      const total = o.customers * DIMENSIONS.length;
      for (let n = 0; n < total; n++) {
        const customer = `c${Math.floor(n / DIMENSIONS.length)}`;
        const dimension = DIMENSIONS[n % DIMENSIONS.length] as string;
        const quantity = 1 + (n % 97);
        const ts = hourMs + Math.floor((n * 49 * 60_000) / total);
        quantities.set(`${accounts[Math.floor(n / DIMENSIONS.length)]}|${dimension}`, quantity);
        messages.push({
          key: customer,
          value: JSON.stringify({ id: `${run}-${n}`, customer, dimension, quantity, timestamp: ts }),
          timestamp: String(ts + 30_000),
        });
      }
      for (let i = 0; i < messages.length; i += 1_000)
        await producer.send({ topic: config.topics.usage, acks: -1, messages: messages.slice(i, i + 1_000) });
    } finally {
      await producer.disconnect();
    }
    const expected = quantities.size;
    await until('every event applied', () =>
      (running.processor?.stats.applied ?? 0) >= expected ? true : undefined,
    );
    if (
      (running.processor?.commitStage.stats.hoursFinalized ?? 0) > 0 ||
      emulator.state.snapshot().records.length
    )
      throw new Error('close latency: the hour closed before the clock reached its closable instant');
    if (now() >= closableAt) throw new Error('close latency: the clock passed the closable instant too soon');

    // A commit interval and a second ahead: the commit stage's next tick sees the clock before the instant.
    const lead = config.window.commitIntervalMs + 1_000;
    say(
      `  ${expected.toLocaleString('en-US')} records' events applied; the clock jumps to ${fmt(lead / 1000)} s before ${new Date(closableAt).toISOString()}`,
    );
    const commit = () => running.processor?.commitStage.stats;
    const ticksBefore = { ...(commit() as NonNullable<ReturnType<typeof commit>>) };
    setClock(closableAt - lead);
    const frozen = await until('the first hour frozen', () =>
      (commit()?.hoursFinalized ?? 0) > 0 ? now() - closableAt : undefined,
    );
    if (frozen < 0) throw new Error('close latency: the hour froze before its closable instant');
    const [cpu0, wall0] = [process.cpuUsage(), Date.now()];
    const emitted = await until('every record emitted', () =>
      (running.processor?.commitStage.stats.recordsEmitted ?? 0) >= expected ? now() - closableAt : undefined,
    );
    let last = 0;
    let lastChange = Date.now();
    // Polled on the worker's count: the emulator's snapshot copies every record, and at 50 a second it
    // took a fifth of this one event loop's CPU from the pipeline under measurement (CPU profile).
    await until('every record accepted', () => {
      const accepted = running.worker?.stats.accepted ?? 0;
      if (accepted !== last) [last, lastChange] = [accepted, Date.now()];
      if (Date.now() - lastChange > 120_000)
        throw new Error(`close latency: stalled at ${accepted} of ${expected}`);
      return accepted >= expected ? true : undefined;
    });
    const records = await until('every record at the emulator', () => {
      const r = emulator.state.snapshot().records;
      return r.length >= expected ? r : undefined;
    });
    const cpu = process.cpuUsage(cpu0);
    const busy = (cpu.user + cpu.system) / 1000 / Math.max(1, Date.now() - wall0);
    const latencies = records
      .map((r) => (Date.parse(r.acceptedAt) - closableAt) / 1000)
      .sort((a, b) => a - b);
    const verified =
      records.length === expected &&
      records.every(
        (r) =>
          r.timestamp === hourIso(hourMs) && quantities.get(`${r.customer}|${r.dimension}`) === r.quantity,
      );
    const snap = emulator.state.snapshot();
    // Emitted at: the submission message's timestamp (wall ms), moved onto the simulated clock.
    const tenantAccount = new Map(accounts.map((a, i) => [`c${i}`, a]));
    const emittedAt = new Map<string, number>();
    for (const m of await readAllMessages(kafka, config.topics.submissions)) {
      const r = parseSubmissionRecord(m.value);
      if (!r) continue;
      const key = `${tenantAccount.get(r.customer)}|${r.dimension}`;
      const at = Number(m.timestamp) + (base - setAt);
      emittedAt.set(key, Math.min(at, emittedAt.get(key) ?? at));
    }
    const workerLatencies = records
      .map(
        (r) =>
          (Date.parse(r.acceptedAt) - (emittedAt.get(`${r.customer}|${r.dimension}`) ?? Number.NaN)) / 1000,
      )
      .sort((a, b) => a - b);
    const ticks = commit() as NonNullable<ReturnType<typeof commit>>;
    const [punctuations, predictedLooks, missedLooks] = [
      ticks.punctuations - ticksBefore.punctuations,
      ticks.predictedLooks - ticksBefore.predictedLooks,
      ticks.missedLooks - ticksBefore.missedLooks,
    ];
    // Round trips per tick on a quiet pipeline: from one tick's start to the start of the third after it.
    const tickAt = (n: number) =>
      until(`commit tick ${n}`, () => (commit()?.punctuations ?? 0) >= n || undefined);
    const first = ticks.punctuations + 1;
    await tickAt(first);
    const rt0 = roundTrips.count;
    await tickAt(first + 3);
    const roundTripsPerTick = (roundTrips.count - rt0) / 3;
    return {
      records: records.length,
      customers: o.customers,
      dimensions: DIMENSIONS.length,
      p50Seconds: percentile(latencies, 0.5),
      p99Seconds: percentile(latencies, 0.99),
      maxSeconds: latencies[latencies.length - 1] as number,
      minSeconds: latencies[0] as number,
      firstFrozenSeconds: frozen / 1000,
      emittedSeconds: emitted / 1000,
      punctuations,
      predictedLooks,
      missedLooks,
      roundTripsPerTick,
      settings: {
        graceMs: config.window.graceMs,
        maxOutOfOrdernessMs: config.window.maxOutOfOrdernessMs,
        commitIntervalMs: config.window.commitIntervalMs,
        rateLimitPerSec: config.worker.rateLimit,
        api: config.worker.api,
      },
      workerP50Seconds: percentile(workerLatencies, 0.5),
      workerP99Seconds: percentile(workerLatencies, 0.99),
      workerCalls: running.worker?.stats.calls ?? 0,
      cpuBusy: busy,
      quotaBoundSeconds: (running.worker?.stats.calls ?? 0) / DEFAULT_RATE_LIMIT,
      throttled: snap.throttled.BatchMeterUsage ?? 0,
      verified,
    };
  } finally {
    roundTrips.restore();
    await pipeline?.stop();
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${run}-`));
    if (topics.length) await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.deleteGroups([config.groups.processor, config.groups.worker]).catch(() => undefined);
    await admin.disconnect();
    await deleteKeysUnder(redis, run);
    redis.disconnect();
    await emulator.close();
    files.remove();
  }
}

/** Its row in the bench's runs table: run, rate, seconds, CPU, notes. */
export function latencyRow(r: LatencyResult): string[] {
  return [
    `(g) close → accepted, ${fmt(r.records)} records, default settings, no rate limit`,
    '',
    `p50 ${fmt(r.p50Seconds, 2)}, p99 ${fmt(r.p99Seconds, 2)}, max ${fmt(r.maxSeconds, 2)}`,
    '',
    `${r.verified ? 'quantities verified' : 'QUANTITIES WRONG'}; emulator and shared limiter without quota, ` +
      `${fmt(r.throttled)} throttled; at the default limit of ${DEFAULT_RATE_LIMIT}/s the calls alone need ` +
      `${fmt(r.quotaBoundSeconds, 1)} s`,
  ];
}

/** Where the time goes, from the measured steps and the settings in force. */
export function latencyNote(r: LatencyResult): string {
  const s = r.settings;
  return (
    `Close → accepted (g): the hour is closable at end + grace ${fmt(s.graceMs / 60_000)} min + out-of-orderness ` +
    `${fmt(s.maxOutOfOrdernessMs / 60_000)} min (idle partitions); its first partition frozen ${fmt(r.firstFrozenSeconds, 2)} s ` +
    `later (the commit stage looks again when the next hour becomes closable, at most ${fmt(s.commitIntervalMs / 1000)} s ` +
    `apart: ${fmt(r.punctuations)} ticks, ${fmt(r.predictedLooks)} at a predicted close, ${fmt(r.missedLooks)} missed; ` +
    `${fmt(r.roundTripsPerTick, 1)} Redis round trips per tick on a quiet pipeline), every record on the submission topic at ` +
    `${fmt(r.emittedSeconds, 2)} s, the first accepted at ${fmt(r.minSeconds, 2)} s; from its message on the submission ` +
    `topic to its acceptance a record took p50 ${fmt(r.workerP50Seconds, 2)} s, p99 ${fmt(r.workerP99Seconds, 2)} s ` +
    `(the worker); the process (pipeline and emulator on one event loop) used ${fmt(r.cpuBusy * 100)} % of a core from ` +
    `the first freeze to the last acceptance; ${fmt(r.workerCalls)} ${s.api} calls ` +
    `with the shared rate limit raised to ${s.rateLimitPerSec}/s for this phase (no quota). Quota-bound: at the default ` +
    `limit of ${DEFAULT_RATE_LIMIT}/s (AWS's quota) those calls alone take ${fmt(r.quotaBoundSeconds, 1)} s at least.`
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { customers: { type: 'string', default: '1000' } }, strict: true });
  const { ensureServices } = await import('../stack/index.ts');
  const { env } = await ensureServices(['kafka', 'redis']);
  const result = await runCloseLatency({
    brokers: env.KAFKA_BROKERS as string,
    redisUrl: env.REDIS_URL as string,
    runId: `latency-${Date.now().toString(36)}`,
    customers: Number(values.customers),
    say: (l) => process.stdout.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
