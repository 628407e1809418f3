/**
 * `npm run bench`: throughput of meterline's processor against the client's limit and against Kafka Streams,
 * on the local stack (one broker, one Redis, same machine).
 *
 *   1. ensures Kafka + Redis (deploy/stack), creates a fresh 6-partition topic and produces one seeded dataset:
 *      N messages (default 2,000,000), 1,000 customers, 5 dimensions, the last 3 closed UTC hours in rough time
 *      order, 1 % of them resends of an earlier event (same id);
 *   2. then, one after the other on the same topic:
 *      (a) a bare kafkajs consumer (eachBatch, JSON.parse of every value): the client's limit;
 *      (b) meterline's processor (deploy/bench/run-processor.ts, its own process) until every message is
 *          applied to Redis: events/s, Redis round trips, peak RSS, Redis memory per open aggregate;
 *      (c) a Kafka Streams 4.4 app (deploy/bench/streams, exactly_once_v2, RocksDB) doing the same hourly sum
 *          until its group's committed offsets reach the end of all partitions;
 *      (d) the metering worker draining 60,000 pending records against the emulator's 10 TPS quota
 *          (deploy/bench/worker-drain.ts): records/s against the ideal 250, mean batch size, throttling;
 *      (e) (b) again on a 10M dataset, for peak RSS (rss-scale.ts); (f) restore of 1M dedupe ids by a new claim
 *          (dedupe-restore.ts); (g) close-to-accepted latency, whole pipeline on defaults (close-latency.ts);
 *   3. prints and writes bench-results/latest.{json,md} (+ a copy named after the run), then deletes its
 *      topics, consumer groups, Redis keys and Streams state.
 *
 * Options: --events N | --quick (100k) | --seed N | --skip bare,processor,streams,worker,rss10m,restore,latency |
 * --drain-records N | --rss-events N | --restore-ids N | --latency-customers N | --streams-mode papi|dsl |
 * --processors N | --streams-threads N | --keep (leave topics/keys for inspection). Goals are reported, never fail the command.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { CompressionTypes, Kafka, logLevel } from 'kafkajs';
import { lazyRecordsInstalled } from '../../src/kafka/lazy-records.ts';
import { silenceKafkajsTimeoutWarning } from '../../src/kafka/quiet-warnings.ts';
import { ensureServices, stackStatus } from '../stack/index.ts';
import {
  LATENCY_GOAL_P99_SECONDS,
  type LatencyResult,
  latencyNote,
  latencyRow,
  runCloseLatency,
} from './close-latency.ts';
import { Dataset, type Expected } from './dataset.ts';
import { RESTORE_GOAL_SECONDS, type RestoreResult, restoreRow, runDedupeRestore } from './dedupe-restore.ts';
import { type ProfileSummary, summarizeProfile } from './profile.ts';
import { atMost, fmt, type Goal } from './report-format.ts';
import { rssGoals, runRssScale, type ScaleLeg } from './rss-scale.ts';
import type { ProcessorSnapshot, ToChild, ToParent } from './run-processor.ts';
import { DRAIN_GOAL, DRAIN_IDEAL_PER_SEC, type DrainResult, runWorkerDrain } from './worker-drain.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const ROOT = here('../../');
const RESULTS = path.join(ROOT, 'bench-results');
const STREAMS_DIR = here('./streams');
const PARTITIONS = 6;
const CUSTOMERS = 1_000;
const DIMENSIONS = ['api_calls', 'jobs', 'egress_gb', 'compute_min', 'seats'];
const HOURS = 3;
const DUPLICATE_RATE = 0.01;
const PRODUCE_BATCH = 5_000;
const PRODUCE_IN_FLIGHT = 4;
// The processor's fetch bounds (src/engine/streams-app.ts); the bare consumer uses the same.
const FETCH_BYTES_PER_PARTITION = 2_097_152;
const FETCH_BYTES = 8_388_608;
const STALL_MS = 90_000;
const GOALS = {
  bOverC: 1.5,
  bOverA: 0.8,
  roundTripsPer10k: 5,
  redisMicrosPerEvent: 0.5,
  redisBytesPerId: 20,
};

const USAGE = `usage: npm run bench -- [options]
  --events N            messages to produce, 1 % of them resends (default 2000000)
  --quick               100000 messages (unless --events is given)
  --seed N              dataset seed (default 7)
  --skip LIST           comma-separated phases to skip: bare, processor, streams, worker, rss10m, restore, latency
  --drain-records N     pending records for the worker drain phase (default 60000)
  --rss-events N        messages of the larger processor run, rss10m (default 10000000; 500000 with --quick)
  --restore-ids N       ids in the partition's dedupe state for the restore phase (default 1000000)
  --latency-customers N customers (× 5 dimensions = records) for the latency phase (default 1000)
  --streams-mode M      papi (default: no repartition, like meterline) | dsl (selectKey → repartition topic)
  --processors N        meterline processors in (b), one process each in one group (default 1: the goals'
                        figure); (c) then gets as many stream threads
  --streams-threads N   Kafka Streams num.stream.threads (default: --processors)
  --profile             V8 CPU profile of the processor (bench-results/logs/<run>-profile/), summarized
  --keep                don't delete topics, groups, Redis keys and Streams state at the end`;

silenceKafkajsTimeoutWarning();
process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';

const say = (line = '') => process.stdout.write(`${line}\n`);
const mb = (bytes: number) => bytes / 1_048_576;

// ---------------------------------------------------------------------------------------------- helpers

function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    if (!line || line.startsWith('#')) continue;
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** calls / usec of one `cmdstat_<name>` line. */
function cmdstat(info: Record<string, string>, name: string): { calls: number; usec: number } {
  const line = info[`cmdstat_${name}`];
  if (!line) return { calls: 0, usec: 0 };
  const get = (k: string) => Number(new RegExp(`(?:^|,)${k}=(\\d+)`).exec(line)?.[1] ?? 0);
  return { calls: get('calls'), usec: get('usec') };
}

interface RedisInfo {
  totalCommands: number;
  usedMemory: number;
  cpuSeconds: number;
  stats: Record<string, string>;
}

async function redisInfo(redis: Redis): Promise<RedisInfo> {
  const info = parseInfo(await redis.info('everything'));
  return {
    totalCommands: Number(info.total_commands_processed ?? 0),
    usedMemory: Number(info.used_memory ?? 0),
    cpuSeconds: Number(info.used_cpu_user ?? 0) + Number(info.used_cpu_sys ?? 0),
    stats: info,
  };
}

/** user + system CPU seconds of a process, from /proc/<pid>/stat (clock ticks of 1/100 s). */
function cpuSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return undefined;
  }
}

/** Busy CPU seconds of the whole machine (all cores), from /proc/stat. */
function machineBusySeconds(): number {
  const cpu =
    readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** CPU seconds used during a phase, per process we know, and by everything else on the machine. */
export interface CpuSplit {
  seconds: Record<string, number>;
  /** Busy core-seconds of the whole machine over the same interval. */
  machine: number;
  /** machine − the processes above: other work on the box (noise). */
  others: number;
  wallSeconds: number;
}

class CpuWatch {
  readonly #pids: Record<string, number | undefined>;
  readonly #start = new Map<string, number>();
  readonly #machine0 = machineBusySeconds();
  readonly #t0 = performance.now();

  constructor(pids: Record<string, number | undefined>) {
    this.#pids = pids;
    for (const [name, pid] of Object.entries(pids)) {
      const c = cpuSeconds(pid);
      if (c !== undefined) this.#start.set(name, c);
    }
  }

  stop(): CpuSplit {
    const seconds: Record<string, number> = {};
    for (const [name, pid] of Object.entries(this.#pids)) {
      const c0 = this.#start.get(name);
      const c1 = cpuSeconds(pid);
      if (c0 !== undefined && c1 !== undefined) seconds[name] = c1 - c0;
    }
    const machine = machineBusySeconds() - this.#machine0;
    const known = Object.values(seconds).reduce((a, b) => a + b, 0);
    return {
      seconds,
      machine,
      others: Math.max(0, machine - known),
      wallSeconds: (performance.now() - this.#t0) / 1000,
    };
  }
}

function procStatusKb(pid: number | undefined, field: 'VmHWM' | 'VmRSS'): number | undefined {
  if (!pid) return undefined;
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function firstLine(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]?.trim() || 'unknown';
}

function machine(redisVersion: string) {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    kernel: os.release(),
    node: process.version,
    java: firstLine('java', ['-version']),
    kafka: 'Apache Kafka 4.4.0 (deploy/stack, single KRaft node)',
    redis: redisVersion,
  };
}

// ---------------------------------------------------------------------------------------------- results

interface PhaseError {
  error: string;
}

interface ProduceResult {
  seconds: number;
  messagesPerSec: number;
  mbPerSec: number;
}

interface BareResult {
  events: number;
  seconds: number;
  eventsPerSec: number;
  /** CPU during the phase: the consumer (this process), the broker, and the rest of the machine. */
  cpu: CpuSplit;
}

interface ProcessorResult {
  /** Processors in the group (one process each). */
  processes: number;
  events: number;
  seconds: number;
  eventsPerSec: number;
  startupSeconds: number;
  stats: ProcessorSnapshot['stats'];
  peakRssMb: number;
  /** Peaks of V8's committed heap and of the memory outside it (Buffers, typed arrays), MB. */
  peakHeapMb: number;
  peakExternalMb: number;
  /** CPU from spawn to done: processor, Redis, broker, this process, the rest of the machine. */
  cpu: CpuSplit;
  redis: {
    roundTrips: number;
    roundTripsPer10k: number;
    commands: Record<string, number>;
    script: {
      calls: number;
      eventsPerCall: number;
      argsPerCall: number;
      argBytesPerEvent: number;
      clientLatencyMsPerCall: number;
      maxLatencyMs: number;
      /** Redis-side time in the script (cmdstat usec of evalsha + eval), total and per call. */
      serverSeconds: number;
      serverMsPerCall: number;
    };
    server: { evalCallsDelta: number; totalCommandsDelta: number };
    memory: {
      usedMemoryDelta: number;
      aggregates: number;
      bytesPerAggregate: number;
      aggregateHashBytes: number;
      seenSetBytes: number;
      seenIds: number;
      otherKeyBytes: number;
    };
  };
  verify: {
    ok: boolean;
    redisMicros: number;
    expectedMicros: number;
    aggregates: number;
    expectedAggregates: number;
  };
  /** With --profile: the processor's CPU profile over its whole life (start-up and stop included). */
  profile?: ProfileSummary;
}

interface StreamsResult {
  mode: string;
  threads: number;
  events: number;
  seconds: number;
  eventsPerSec: number;
  startupSeconds: number;
  buildSeconds: number;
  peakRssMb: number;
  /** CPU from launch to done: the Streams JVM, the broker, this process, the rest of the machine. */
  cpu: CpuSplit;
  verify: {
    ok: boolean;
    windows: number;
    sumMicros: number;
    expectedMicros: number;
    processed: number;
    dropped: number;
    unparsable: number;
  };
}

interface Results {
  runId: string;
  startedAt: string;
  machine: ReturnType<typeof machine>;
  dataset: Expected & { partitions: number; customers: number; dimensions: number; seed: number };
  produce: ProduceResult;
  bare: BareResult | PhaseError | null;
  processor: ProcessorResult | PhaseError | null;
  streams: StreamsResult | PhaseError | null;
  worker: DrainResult | PhaseError | null;
  rss10m: ScaleLeg<ProduceResult, ProcessorResult> | PhaseError | null;
  restore: RestoreResult | PhaseError | null;
  latency: LatencyResult | PhaseError | null;
  ratios: { bOverA: number | null; bOverC: number | null };
  goals: Goal[];
}

const ok = <T extends object>(r: T | PhaseError | null): r is T => r !== null && !('error' in r);

// ---------------------------------------------------------------------------------------------- the run

interface Ctx {
  runId: string;
  topic: string;
  kafka: Kafka;
  brokers: string;
  redisUrl: string;
  redis: Redis;
  expected: Expected;
  kafkaPid: number | undefined;
  redisPid: number | undefined;
  logsDir: string;
  timeoutMs: number;
  children: Set<ChildProcess>;
  stateDirs: string[];
  /** Set with --profile: the processor child writes a V8 CPU profile here. */
  profileDir: string | undefined;
}

async function produce(ctx: Ctx, dataset: Dataset, target: number): Promise<ProduceResult> {
  const producer = ctx.kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const t0 = performance.now();
  let sent = 0;
  let bytes = 0;
  let nextReport = 0.1;
  const inFlight = new Set<Promise<void>>();
  try {
    for (const chunk of dataset.chunks(PRODUCE_BATCH)) {
      while (inFlight.size >= PRODUCE_IN_FLIGHT) await Promise.race(inFlight);
      for (const m of chunk) bytes += m.value.length + m.key.length;
      const p = producer
        .sendBatch({
          topicMessages: [{ topic: ctx.topic, messages: chunk }],
          acks: -1,
          compression: CompressionTypes.None,
        })
        .then(() => {
          sent += chunk.length;
          if (sent / target >= nextReport) {
            const s = (performance.now() - t0) / 1000;
            say(`  produced ${fmt(sent)} / ${fmt(target)}  (${fmt(sent / s)} msg/s)`);
            nextReport = Math.floor((sent / target) * 10 + 1) / 10;
          }
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await Promise.all(inFlight);
  } finally {
    await producer.disconnect();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, messagesPerSec: sent / seconds, mbPerSec: mb(bytes) / seconds };
}

async function runBare(ctx: Ctx): Promise<BareResult> {
  // The baseline is kafkajs as published: meterline's own record decoder (src/kafka/lazy-records.ts) is
  // installed only by meterline's client factory, which this process never calls.
  if (lazyRecordsInstalled()) throw new Error('the bare consumer must run kafkajs as published');
  const consumer = ctx.kafka.consumer({
    groupId: `${ctx.runId}-bare`,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
    maxBytesPerPartition: FETCH_BYTES_PER_PARTITION,
    maxBytes: FETCH_BYTES,
  });
  const expected = ctx.expected.messages;
  let joinedAt: number | undefined;
  let doneAt: number | undefined;
  let count = 0;
  let parsed = 0;
  let cpu: CpuSplit | undefined;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joinedAt ??= performance.now();
  });
  const watch = new CpuWatch({ consumer: process.pid, kafka: ctx.kafkaPid, redis: ctx.redisPid });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: ctx.topic, fromBeginning: true });
    await consumer.run({
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const v = JSON.parse((m.value as Buffer).toString('utf8')) as { quantity?: unknown };
          if (v.quantity !== undefined) parsed += 1;
        }
        count += batch.messages.length;
        if (count >= expected && doneAt === undefined) {
          doneAt = performance.now();
          cpu = watch.stop();
          resolveDone();
        }
      },
    });
    const progress = setInterval(() => say(`  (a) ${fmt(count)} / ${fmt(expected)}`), 5_000);
    try {
      await withTimeout(done, ctx.timeoutMs, 'bare consumer');
    } finally {
      clearInterval(progress);
    }
  } finally {
    await consumer.disconnect();
  }
  if (parsed !== count) throw new Error(`bare consumer: parsed ${parsed} of ${count} values`);
  const seconds = ((doneAt as number) - (joinedAt as number)) / 1000;
  return { events: count, seconds, eventsPerSec: count / seconds, cpu: cpu as CpuSplit };
}

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

async function redisFootprint(ctx: Ctx) {
  const keys = await scanKeys(ctx.redis, `${ctx.runId}:*`);
  let aggregates = 0;
  let micros = 0;
  let aggregateHashBytes = 0;
  let seenSetBytes = 0;
  let seenIds = 0;
  let otherKeyBytes = 0;
  for (const key of keys) {
    const bytes = Number((await ctx.redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
    if (key.includes(':agg:')) {
      const all = await ctx.redis.hgetall(key);
      for (const v of Object.values(all)) micros += Number(v);
      aggregates += Object.keys(all).length;
      aggregateHashBytes += bytes;
    } else if (key.includes(':seen:')) {
      seenIds += await ctx.redis.scard(key);
      seenSetBytes += bytes;
    } else if (key.includes(':ids:v1:')) {
      // The packed dedupe logs (16 bytes per id) and the index of their hours.
      if (!key.endsWith(':hours'))
        for (const entry of await ctx.redis.lrangeBuffer(key, 0, -1)) seenIds += entry.length / 16;
      seenSetBytes += bytes;
    } else otherKeyBytes += bytes;
  }
  return { aggregates, micros, aggregateHashBytes, seenSetBytes, seenIds, otherKeyBytes };
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Stops a child we spawned, by its pid: the polite way first, then SIGTERM, then SIGKILL. */
async function stopChild(child: ChildProcess, polite: () => void, ms = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    polite();
  } catch {
    // channel already closed
  }
  if (await waitExit(child, ms)) return;
  child.kill('SIGTERM');
  if (await waitExit(child, 10_000)) return;
  child.kill('SIGKILL');
  await waitExit(child, 5_000);
}

/**
 * The Node flags and environment meterline runs with (`npm run meterline`, which the image's entrypoint and ENV
 * equal): the processor is measured with the heap and allocator settings users get. The OpenTelemetry preload
 * is left out: tracing is off here.
 */
function runtime(): { flags: string[]; env: Record<string, string> } {
  const script: string = JSON.parse(readFileSync(here('../../package.json'), 'utf8')).scripts.meterline;
  const words = script.split(/\s+/);
  const flags = words.filter((w, i) => w.startsWith('--') && w !== '--import' && words[i - 1] !== '--import');
  const env: Record<string, string> = {};
  for (const w of words.slice(0, words.indexOf('node'))) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(w);
    if (m) env[m[1] as string] = m[2] as string;
  }
  return { flags, env };
}

/**
 * Phase (b): `processes` processors in one consumer group (1 by default: the figure the goals are about; more
 * show what one processor per core gives, the way Kafka Streams runs a stream thread per core), timed from the
 * first one's group join until every message is handled, over all of them.
 */
/** Several processors' counters as one: sums, and the largest of the peaks. */
function sumSnapshots(all: ProcessorSnapshot[]): ProcessorSnapshot {
  const [first, ...rest] = all as [ProcessorSnapshot, ...ProcessorSnapshot[]];
  const sum = structuredClone(first);
  const add = (into: Record<string, unknown>, from: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(from)) {
      if (typeof v === 'number')
        into[k] = k.startsWith('max') ? Math.max(Number(into[k] ?? 0), v) : Number(into[k] ?? 0) + v;
      else if (v && typeof v === 'object') {
        into[k] ??= {};
        add(into[k] as Record<string, unknown>, v as Record<string, unknown>);
      }
    }
  };
  for (const s of rest) {
    add(sum.stats as unknown as Record<string, unknown>, s.stats as unknown as Record<string, unknown>);
    add(sum.redis as unknown as Record<string, unknown>, s.redis as unknown as Record<string, unknown>);
    sum.heapTotalKb = Math.max(sum.heapTotalKb, s.heapTotalKb);
    sum.externalKb = Math.max(sum.externalKb, s.externalKb);
    sum.rssKb = Math.max(sum.rssKb, s.rssKb);
  }
  return sum;
}

async function runProcessor(ctx: Ctx, processes = 1): Promise<ProcessorResult> {
  const log = path.join(ctx.logsDir, `${ctx.runId}-processor.log`);
  const fd = openSync(log, 'a');
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('METERLINE_') || k.startsWith('AWS_')) delete env[k];
  const node = runtime();
  Object.assign(env, node.env, {
    KAFKA_BROKERS: ctx.brokers,
    KAFKA_CLIENT_ID: 'meterline-bench',
    REDIS_URL: ctx.redisUrl,
    METERLINE_PLAN: here('./plan.json'),
    METERLINE_TOPIC_USAGE: ctx.topic,
    METERLINE_TOPIC_SUBMISSIONS: `${ctx.runId}-submissions`,
    METERLINE_TOPIC_FAILED: `${ctx.runId}-failed`,
    METERLINE_TOPIC_CHANGELOG: `${ctx.runId}-changelog`,
    METERLINE_TOPIC_PARTITIONS: String(PARTITIONS),
    METERLINE_REDIS_PREFIX: ctx.runId,
    METERLINE_PROCESSOR_GROUP: `${ctx.runId}-processor`,
    // Large enough that the commit stage finalizes no hour during the run (they must stay under 24 h).
    METERLINE_WINDOW_GRACE: '6h',
    METERLINE_WINDOW_MAX_DELAY: '12h',
    METERLINE_SUBMIT_MARGIN: '1h',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    // No metrics endpoint: it would need a free port, and another meterline on the machine may hold the default.
    METERLINE_OPS_PORT: 'off',
    BENCH_EXPECTED: String(ctx.expected.messages),
  });

  const before = await redisInfo(ctx.redis);
  const shared = processes > 1;
  if (shared) env.BENCH_EXPECTED = 'shared';
  const children = Array.from({ length: processes }, (_, i) => {
    const c = spawn(
      process.execPath,
      [
        ...node.flags,
        ...(ctx.profileDir && i === 0
          ? ['--cpu-prof', `--cpu-prof-dir=${ctx.profileDir}`, '--cpu-prof-name=processor.cpuprofile']
          : []),
        here('./run-processor.ts'),
      ],
      { env, stdio: ['ignore', fd, fd, 'ipc'] },
    );
    ctx.children.add(c);
    c.once('exit', () => ctx.children.delete(c));
    return c;
  });
  closeSync(fd);
  const pids = children.map((c) => c.pid as number);
  const watch = new CpuWatch({
    ...Object.fromEntries(pids.map((p, i) => [i === 0 ? 'processor' : `processor ${i + 1}`, p])),
    redis: ctx.redisPid,
    kafka: ctx.kafkaPid,
    bench: process.pid,
  });
  // The largest of the processes' peaks: the figure per processor.
  let peakKb = 0;
  const rss = setInterval(() => {
    for (const p of pids) peakKb = Math.max(peakKb, procStatusKb(p, 'VmHWM') ?? 0);
  }, 250);

  let started: Extract<ToParent, { type: 'started' }> | undefined;
  let peakHeapKb = 0;
  let peakExternalKb = 0;
  let lastChange = Date.now();
  let lastEvents = -1;
  const expected = ctx.expected.messages;
  try {
    const done = await withTimeout(
      new Promise<Extract<ToParent, { type: 'done' }>>((resolve, reject) => {
        const handledBy = new Map<number, { count: number; at: number }>();
        const snapshots = new Map<number, ProcessorSnapshot>();
        let finishing = false;
        children.forEach((c, i) => {
          c.on('message', (m: ToParent) => {
            if (m.type === 'started') {
              if (!started || m.joinedAt < started.joinedAt) started = m;
            } else if (m.type === 'handled') {
              handledBy.set(i, { count: m.count, at: m.at });
              const sum = [...handledBy.values()].reduce((a, h) => a + h.count, 0);
              if (sum >= expected && !finishing) {
                finishing = true;
                for (const x of children) x.send({ type: 'snapshot' } satisfies ToChild);
              }
            } else if (m.type === 'snapshot') {
              snapshots.set(i, m.snapshot);
              if (snapshots.size === children.length) {
                const doneAt = Math.max(...[...handledBy.values()].map((h) => h.at));
                resolve({ type: 'done', doneAt, snapshot: sumSnapshots([...snapshots.values()]) });
              }
            } else if (m.type === 'progress') {
              peakHeapKb = Math.max(peakHeapKb, m.snapshot.heapTotalKb);
              peakExternalKb = Math.max(peakExternalKb, m.snapshot.externalKb);
              if (i !== 0) return;
              if (m.snapshot.stats.events !== lastEvents) {
                lastEvents = m.snapshot.stats.events;
                lastChange = Date.now();
              } else if (Date.now() - lastChange > STALL_MS) {
                reject(
                  new Error(`processor stalled at ${lastEvents} events for ${STALL_MS / 1000} s; see ${log}`),
                );
              }
              if (m.snapshot.at % 5_000 < 1_000)
                say(
                  `  (b) ${fmt(m.snapshot.stats.events)}${shared ? ' (first process)' : ''} / ${fmt(expected)}`,
                );
            } else if (m.type === 'done') resolve(m);
            else if (m.type === 'error') reject(new Error(`processor: ${m.message}\n  (log: ${log})`));
          });
          c.once('exit', (code, signal) =>
            reject(new Error(`processor exited early (code ${code}, signal ${signal}); see ${log}`)),
          );
        });
      }),
      ctx.timeoutMs,
      'processor',
    );
    const cpu = watch.stop();
    for (const p of pids) peakKb = Math.max(peakKb, procStatusKb(p, 'VmHWM') ?? 0);
    const after = await redisInfo(ctx.redis);
    const footprint = await redisFootprint(ctx);

    const s = done.snapshot;
    if (!started) throw new Error('processor: no start message');
    const seconds = (done.doneAt - started.joinedAt) / 1000;
    const events = s.stats.events;
    const r = s.redis;
    const evalBefore = [cmdstat(before.stats, 'evalsha'), cmdstat(before.stats, 'eval')];
    const evalAfter = [cmdstat(after.stats, 'evalsha'), cmdstat(after.stats, 'eval')];
    const evalCalls =
      evalAfter.reduce((a, c) => a + c.calls, 0) - evalBefore.reduce((a, c) => a + c.calls, 0);
    const evalUsec = evalAfter.reduce((a, c) => a + c.usec, 0) - evalBefore.reduce((a, c) => a + c.usec, 0);
    const result: ProcessorResult = {
      processes,
      events,
      seconds,
      eventsPerSec: events / seconds,
      startupSeconds: (started.joinedAt - started.startedAt) / 1000,
      stats: s.stats,
      peakRssMb: peakKb / 1024,
      peakHeapMb: Math.max(peakHeapKb, s.heapTotalKb) / 1024,
      peakExternalMb: Math.max(peakExternalKb, s.externalKb) / 1024,
      cpu,
      redis: {
        roundTrips: r.roundTrips,
        roundTripsPer10k: (r.roundTrips / events) * 10_000,
        commands: r.commands,
        script: {
          calls: r.script.calls,
          eventsPerCall: events / Math.max(1, r.script.calls),
          argsPerCall: r.script.args / Math.max(1, r.script.calls),
          argBytesPerEvent: r.script.argBytes / Math.max(1, events),
          clientLatencyMsPerCall: r.script.latencyMs / Math.max(1, r.script.calls),
          maxLatencyMs: r.script.maxLatencyMs,
          serverSeconds: evalUsec / 1e6,
          serverMsPerCall: evalUsec / 1000 / Math.max(1, evalCalls),
        },
        server: { evalCallsDelta: evalCalls, totalCommandsDelta: after.totalCommands - before.totalCommands },
        memory: {
          usedMemoryDelta: after.usedMemory - before.usedMemory,
          aggregates: footprint.aggregates,
          bytesPerAggregate: (after.usedMemory - before.usedMemory) / Math.max(1, footprint.aggregates),
          aggregateHashBytes: footprint.aggregateHashBytes,
          seenSetBytes: footprint.seenSetBytes,
          seenIds: footprint.seenIds,
          otherKeyBytes: footprint.otherKeyBytes,
        },
      },
      verify: {
        ok:
          footprint.micros === ctx.expected.uniqueMicros &&
          footprint.aggregates === ctx.expected.aggregates &&
          s.stats.applied === ctx.expected.unique,
        redisMicros: footprint.micros,
        expectedMicros: ctx.expected.uniqueMicros,
        aggregates: footprint.aggregates,
        expectedAggregates: ctx.expected.aggregates,
      },
    };
    return result;
  } finally {
    clearInterval(rss);
    await Promise.all(children.map((c) => stopChild(c, () => c.send({ type: 'stop' } satisfies ToChild))));
  }
}

/** Attaches the processor's CPU profile summary (after the child has exited and written it). */
function attachProfile(ctx: Ctx, result: ProcessorResult): void {
  if (!ctx.profileDir) return;
  const file = path.join(ctx.profileDir, 'processor.cpuprofile');
  try {
    result.profile = summarizeProfile(file);
  } catch (error) {
    say(`  no CPU profile: ${(error as Error).message}`);
  }
}

function buildStreams(ctx: Ctx): number {
  const t0 = performance.now();
  const log = path.join(ctx.logsDir, `${ctx.runId}-maven.log`);
  const r = spawnSync('mvn', ['-q', '-B', 'package'], { cwd: STREAMS_DIR, encoding: 'utf8' });
  writeFileSync(log, `${r.stdout ?? ''}${r.stderr ?? ''}`);
  if (r.status !== 0) throw new Error(`mvn -q -B package failed (exit ${r.status}); see ${log}`);
  return (performance.now() - t0) / 1000;
}

async function committedAtEnd(ctx: Ctx, groupId: string, ends: Map<number, bigint>): Promise<boolean> {
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [ctx.topic] });
    const parts = offsets?.partitions ?? [];
    if (parts.length < ends.size) return false;
    return parts.every((p) => {
      const end = ends.get(p.partition) ?? 0n;
      return p.offset !== '-1' && BigInt(p.offset) >= end;
    });
  } finally {
    await admin.disconnect();
  }
}

async function runStreams(ctx: Ctx, mode: string, threads: number): Promise<StreamsResult> {
  say('  building deploy/bench/streams (mvn -q -B package) …');
  const buildSeconds = buildStreams(ctx);
  const appId = `${ctx.runId}-streams`;
  const stateDir = mkdtempSync(path.join(os.tmpdir(), 'meterline-bench-streams-'));
  ctx.stateDirs.push(stateDir);
  const admin = ctx.kafka.admin();
  await admin.connect();
  const ends = new Map<number, bigint>();
  try {
    for (const o of await admin.fetchTopicOffsets(ctx.topic)) ends.set(o.partition, BigInt(o.high));
  } finally {
    await admin.disconnect();
  }
  const log = path.join(ctx.logsDir, `${ctx.runId}-streams.log`);
  const fd = openSync(log, 'a');
  const target = path.join(STREAMS_DIR, 'target');
  const launchedAt = Date.now();
  const child = spawn(
    'java',
    [
      '-Xmx1g',
      '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn',
      '-cp',
      `${path.join(target, 'meterline-bench-streams-1.jar')}:${path.join(target, 'lib', '*')}`,
      'meterline.bench.HourlySum',
      '--bootstrap',
      ctx.brokers,
      '--topic',
      ctx.topic,
      '--app-id',
      appId,
      '--state-dir',
      stateDir,
      '--mode',
      mode,
      '--threads',
      String(threads),
    ],
    { stdio: ['pipe', 'pipe', fd] },
  );
  closeSync(fd);
  ctx.children.add(child);
  child.once('exit', () => ctx.children.delete(child));
  const pid = child.pid as number;
  let runningAt: number | undefined;
  let failure: string | undefined;
  const verifyWaiters: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const [kind, ...rest] = line.split(' ');
    if (kind === 'STATE' && rest[0] === 'RUNNING') runningAt ??= Number(rest[2]);
    else if (kind === 'ERROR') failure = rest.join(' ');
    else if (kind === 'VERIFY') verifyWaiters.shift()?.(rest.join(' '));
  });
  let peakKb = 0;
  const rss = setInterval(() => {
    peakKb = Math.max(peakKb, procStatusKb(pid, 'VmHWM') ?? 0);
  }, 250);
  const watch = new CpuWatch({ streams: pid, kafka: ctx.kafkaPid, bench: process.pid });
  const verify = async () => {
    const line = await withTimeout(
      new Promise<string>((resolve) => {
        verifyWaiters.push(resolve);
        child.stdin?.write('verify\n');
      }),
      60_000,
      'Kafka Streams verify',
    );
    const [windows = 0, sumMicros = 0, processed = 0, dropped = 0, unparsable = 0] = line
      .split(' ')
      .map(Number);
    return { windows, sumMicros, processed, dropped, unparsable };
  };
  try {
    const deadline = Date.now() + ctx.timeoutMs;
    let nextReport = Date.now() + 5_000;
    let doneAt: number | undefined;
    while (doneAt === undefined) {
      if (failure) throw new Error(`Kafka Streams: ${failure}; see ${log}`);
      if (child.exitCode !== null)
        throw new Error(`Kafka Streams exited (code ${child.exitCode}); see ${log}`);
      if (Date.now() > deadline) throw new Error(`Kafka Streams: timed out; see ${log}`);
      // dsl: the source offsets say nothing about the repartition topic behind them; also wait for the store's
      // total (interactive query) to be complete.
      if (
        runningAt !== undefined &&
        (await committedAtEnd(ctx, appId, ends)) &&
        (mode === 'papi' || (await verify()).sumMicros === ctx.expected.allMicros)
      )
        doneAt = Date.now();
      else await sleep(100);
      if (Date.now() >= nextReport) {
        nextReport += 5_000;
        say(`  (c) ${runningAt === undefined ? 'starting' : 'running'} …`);
      }
    }
    const cpu = watch.stop();
    peakKb = Math.max(peakKb, procStatusKb(pid, 'VmHWM') ?? 0);
    const v = await verify();
    const seconds = (doneAt - (runningAt as number)) / 1000;
    const events = ctx.expected.messages;
    return {
      mode,
      threads,
      events,
      seconds,
      eventsPerSec: events / seconds,
      startupSeconds: ((runningAt as number) - launchedAt) / 1000,
      buildSeconds,
      peakRssMb: peakKb / 1024,
      cpu,
      verify: {
        ok:
          v.sumMicros === ctx.expected.allMicros &&
          v.windows === ctx.expected.aggregates &&
          v.processed === events,
        ...v,
        expectedMicros: ctx.expected.allMicros,
      },
    };
  } finally {
    clearInterval(rss);
    await stopChild(child, () => child.stdin?.end('stop\n'), 45_000);
  }
}

async function cleanup(ctx: Ctx): Promise<void> {
  for (const child of ctx.children) await stopChild(child, () => child.kill('SIGTERM'), 10_000);
  const admin = ctx.kafka.admin();
  try {
    await admin.connect();
    const groups = ['bare', 'processor', 'streams', 'rss-processor'].map((g) => `${ctx.runId}-${g}`);
    for (const g of groups) await admin.deleteGroups([g]).catch(() => undefined);
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${ctx.runId}-`));
    if (topics.length) await admin.deleteTopics({ topics, timeout: 30_000 });
    say(`  deleted ${topics.length} topics and the run's consumer groups`);
  } catch (error) {
    say(`  topic cleanup failed: ${(error as Error).message}`);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  try {
    // The run's keys and its phases' (`<run id>-<phase>:`), should a phase have left any.
    const keys = await scanKeys(ctx.redis, `${ctx.runId}*`);
    for (let i = 0; i < keys.length; i += 500) await ctx.redis.unlink(...keys.slice(i, i + 500));
    say(`  deleted ${keys.length} Redis keys under ${ctx.runId}:`);
  } catch (error) {
    say(`  Redis cleanup failed: ${(error as Error).message}`);
  }
  for (const dir of ctx.stateDirs) rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------- report

function goals(r: Results): Goal[] {
  const rt = ok(r.processor) ? r.processor.redis.roundTripsPer10k : null;
  // Redis's own time in the window script (its cmdstat), per event the processor read; its dedupe logs' bytes per id.
  const redisMicros = ok(r.processor)
    ? (r.processor.redis.script.serverSeconds * 1e6) / Math.max(1, r.processor.events)
    : null;
  const mem = ok(r.processor) ? r.processor.redis.memory : null;
  const bytesPerId = mem && mem.seenIds > 0 ? mem.seenSetBytes / mem.seenIds : null;
  const judge = (value: number | null, pass: (v: number) => boolean) => (value === null ? null : pass(value));
  return [
    {
      goal: 'b/c (processor vs Kafka Streams)',
      target: `≥ ${GOALS.bOverC}`,
      value: r.ratios.bOverC,
      pass: judge(r.ratios.bOverC, (v) => v >= GOALS.bOverC),
    },
    {
      goal: 'b/a (processor vs bare consumer)',
      target: `≥ ${GOALS.bOverA}`,
      value: r.ratios.bOverA,
      pass: judge(r.ratios.bOverA, (v) => v >= GOALS.bOverA),
    },
    {
      goal: 'Redis round trips / 10k events',
      target: `≤ ${GOALS.roundTripsPer10k}`,
      value: rt,
      pass: judge(rt, (v) => v <= GOALS.roundTripsPer10k),
    },
    atMost('Redis CPU per event, µs (the window script)', GOALS.redisMicrosPerEvent, redisMicros),
    atMost('Redis bytes per retained event id', GOALS.redisBytesPerId, bytesPerId),
    {
      goal: `worker drain / ideal ${DRAIN_IDEAL_PER_SEC} records/s`,
      target: `≥ ${DRAIN_GOAL}`,
      value: ok(r.worker) ? r.worker.ofIdeal : null,
      pass: judge(ok(r.worker) ? r.worker.ofIdeal : null, (v) => v >= DRAIN_GOAL),
    },
    ...rssGoals(
      ok(r.processor) ? r.processor : null,
      ok(r.rss10m) ? { events: r.rss10m.events, peakRssMb: r.rss10m.processor.peakRssMb } : null,
    ),
    atMost(
      `dedupe restore, s (${ok(r.restore) ? fmt(r.restore.ids) : '1M'} ids, new claim)`,
      RESTORE_GOAL_SECONDS,
      ok(r.restore) ? r.restore.restoreSeconds : null,
      ' s',
    ),
    atMost(
      'close → accepted latency p99, s',
      LATENCY_GOAL_P99_SECONDS,
      ok(r.latency) ? r.latency.p99Seconds : null,
      ' s',
    ),
  ];
}

/** "processor 20.9, redis 10.1, kafka 1.2, others 0.4" (core-seconds). */
function cpuText(c: CpuSplit): string {
  const parts = Object.entries(c.seconds).map(([name, sec]) => `${name} ${fmt(sec, 1)}`);
  return [...parts, `other processes ${fmt(c.others, 1)}`].join(', ');
}

function markdown(r: Results): string {
  const lines: string[] = [];
  const d = r.dataset;
  const m = r.machine;
  lines.push(`# meterline benchmark — ${r.runId}`, '');
  lines.push(
    `${fmt(d.messages)} messages (${fmt(d.unique)} events + ${fmt(d.duplicates)} resent ids), ${d.customers} customers, ` +
      `${d.dimensions} dimensions, ${d.hours} closed UTC hours from ${new Date(d.firstHourMs).toISOString()}, ` +
      `${d.partitions} partitions, seed ${d.seed}; ${fmt(d.valueBytes / d.messages)} B/value, ` +
      `${fmt(d.aggregates)} (customer, dimension, hour) aggregates.`,
    '',
  );
  lines.push(
    `Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Linux ${m.kernel}; Node ${m.node}; ` +
      `${m.java}; ${m.kafka}; Redis ${m.redis}. Broker, Redis and the consumer under test share the machine.`,
    '',
  );
  const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  lines.push(
    row(['run', 'events/s', 'seconds', 'CPU core-s (until done)', 'notes']),
    row(['---', '---:', '---:', '---', '---']),
  );
  lines.push(
    row([
      'produce (kafkajs sendBatch, acks -1)',
      fmt(r.produce.messagesPerSec),
      fmt(r.produce.seconds, 1),
      '',
      `${fmt(r.produce.mbPerSec, 1)} MB/s, ${PRODUCE_BATCH}-message batches, ${PRODUCE_IN_FLIGHT} in flight`,
    ]),
  );
  const phase = (
    name: string,
    p: { eventsPerSec: number; seconds: number; cpu: CpuSplit } | PhaseError | null,
    note: (x: never) => string,
  ) => {
    if (p === null) lines.push(row([name, 'skipped', '', '', '']));
    else if ('error' in p) lines.push(row([name, 'error', '', '', p.error.split('\n')[0] as string]));
    else lines.push(row([name, fmt(p.eventsPerSec), fmt(p.seconds, 1), cpuText(p.cpu), note(p as never)]));
  };
  phase('(a) bare kafkajs consumer, JSON.parse only', r.bare, () => 'group join → last message');
  phase(
    '(b) meterline processor (EOS: Redis Lua + checkpoint, dedupe)',
    r.processor,
    (p: ProcessorResult) =>
      `${p.processes > 1 ? `${p.processes} processes in one group; first ` : ''}group join → all in Redis; ${p.verify.ok ? 'Redis totals verified' : 'REDIS TOTALS WRONG'}; peak RSS ${fmt(p.peakRssMb)} MB${p.processes > 1 ? ' (the largest process)' : ''}`,
  );
  phase(
    '(c) Kafka Streams 4.4, exactly_once_v2, RocksDB',
    r.streams,
    (p: StreamsResult) =>
      `RUNNING → offsets committed at end; ${p.mode}, ${p.threads} stream thread${p.threads === 1 ? '' : 's'}; ${p.verify.ok ? 'store totals verified' : 'STORE TOTALS WRONG'}; peak RSS ${fmt(p.peakRssMb)} MB`,
  );
  if (r.worker === null) lines.push(row(['(d) metering worker drain, 10 TPS quota', 'skipped', '', '', '']));
  else if ('error' in r.worker)
    lines.push(row(['(d) metering worker drain, 10 TPS quota', 'error', '', '', r.worker.error]));
  else
    lines.push(
      row([
        '(d) metering worker drain, 10 TPS quota',
        `${fmt(r.worker.recordsPerSec, 1)} records/s`,
        fmt(r.worker.seconds, 1),
        '',
        `${fmt(r.worker.records)} records, ${fmt(r.worker.calls)} calls, mean batch ${fmt(r.worker.meanBatch, 1)}, ` +
          `${fmt(r.worker.throttled)} throttling answers; ideal ${DRAIN_IDEAL_PER_SEC}/s`,
      ]),
    );
  const rss = r.rss10m;
  phase(
    `(e) meterline processor, ${ok(rss) ? fmt(rss.events) : 'larger'} messages (as b)`,
    ok(rss) ? rss.processor : rss,
    (p: ProcessorResult) =>
      `${p.verify.ok ? 'Redis totals verified' : 'REDIS TOTALS WRONG'}; peak RSS ${fmt(p.peakRssMb)} MB; ` +
      `produced at ${ok(rss) ? fmt(rss.produce.messagesPerSec) : '–'} msg/s`,
  );
  const other = <T extends object>(name: string, x: T | PhaseError | null, cells: (v: T) => string[]) =>
    lines.push(
      row(
        x === null
          ? [name, 'skipped', '', '', '']
          : 'error' in x
            ? [name, 'error', '', '', x.error]
            : cells(x),
      ),
    );
  other('(f) dedupe restore', r.restore, restoreRow);
  other('(g) close → accepted latency', r.latency, latencyRow);
  lines.push('');
  lines.push(row(['metric', 'value', 'goal', 'result']), row(['---', '---:', '---', '---']));
  const pf = (pass: boolean | null) => (pass === null ? 'n/a' : pass ? 'PASS' : 'FAIL');
  for (const g of r.goals)
    lines.push(row([g.goal, g.value === null ? '–' : fmt(g.value, 2), g.target, pf(g.pass)]));
  if (ok(r.processor)) {
    const p = r.processor;
    const mem = p.redis.memory;
    lines.push(
      row([
        'Redis memory / open aggregate (used_memory Δ / aggregates)',
        `${fmt(mem.bytesPerAggregate)} B`,
        '–',
        `${fmt(mem.aggregates)} aggregates; hashes ${fmt(mem.aggregateHashBytes / Math.max(1, mem.aggregates))} B/agg, ` +
          `dedupe state ${fmt(mem.seenSetBytes / Math.max(1, mem.aggregates))} B/agg (${fmt(mem.seenSetBytes / Math.max(1, mem.seenIds), 1)} B/id)`,
      ]),
    );
  }
  lines.push('');
  if (ok(r.processor)) {
    const p = r.processor;
    const s = p.redis.script;
    const cmds = Object.entries(p.redis.commands)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(', ');
    lines.push('Where (b) spends its time:', '');
    lines.push(
      `- CPU from spawn to done (${fmt(p.cpu.wallSeconds, 1)} s wall, ${fmt(p.cpu.wallSeconds * r.machine.nproc, 1)} core-s ` +
        `on ${r.machine.nproc} cores): ${cpuText(p.cpu)}.`,
      `- Window script: ${fmt(s.calls)} calls, ${fmt(s.eventsPerCall)} events/call, ${fmt(s.argsPerCall)} ARGV+KEYS/call, ` +
        `${fmt(s.argBytesPerEvent, 1)} argument bytes/event; Redis-side ${fmt(s.serverSeconds, 2)} s in total ` +
        `(${fmt(s.serverMsPerCall, 1)} ms/call); client-seen ${fmt(s.clientLatencyMsPerCall, 1)} ms/call (max ${fmt(s.maxLatencyMs)} ms).`,
      `- Redis client calls: ${fmt(p.redis.roundTrips)} round trips (${cmds}); server-side Δ evalsha+eval ${fmt(p.redis.server.evalCallsDelta)}, ` +
        `Δ total_commands_processed ${fmt(p.redis.server.totalCommandsDelta)} (counts every command the script runs inside Redis, and other clients of the shared Redis).`,
      `- Script calls in flight: ${fmt((s.calls * s.clientLatencyMsPerCall) / 1000, 1)} s summed over calls, in ${fmt(p.seconds, 1)} s ` +
        `(partitions overlap: one decodes while another's call is in flight; a client-seen time far above Redis's own is ` +
        `the reply waiting for a busy main thread).`,
      `- Memory: peak RSS ${fmt(p.peakRssMb)} MB; V8 heap (committed) ≤ ${fmt(p.peakHeapMb)} MB, outside it (Buffers, typed arrays) ≤ ` +
        `${fmt(p.peakExternalMb)} MB, sampled each second; the rest is the Node binary and allocator slack.`,
      `- Processor: ${fmt(p.stats.batches)} batches, ${fmt(p.stats.applied)} applied, ${fmt(p.stats.duplicates)} duplicates dropped, ` +
        `start-up (config → group joined) ${fmt(p.startupSeconds, 1)} s.`,
      '',
    );
    if (p.profile) {
      const pr = p.profile;
      lines.push(
        `CPU profile of the processor (${fmt(pr.totalMs / 1000, 1)} s sampled, its whole life): ` +
          pr.areas.map((a) => `${a.area} ${fmt(a.share * 100, 1)} %`).join(', '),
        '',
        row(['self time', 'share', 'function', 'area']),
        row(['---:', '---:', '---', '---']),
        ...pr.top.map((f) => row([`${fmt(f.ms)} ms`, `${fmt(f.share * 100, 1)} %`, `\`${f.fn}\``, f.area])),
        '',
      );
    }
  }
  if (ok(r.latency)) lines.push(latencyNote(r.latency), '');
  if (ok(r.streams)) {
    const c = r.streams;
    lines.push(
      `Kafka Streams: start-up (JVM → RUNNING) ${fmt(c.startupSeconds, 1)} s, mvn build ${fmt(c.buildSeconds, 1)} s; ` +
        `CPU from launch to done (${fmt(c.cpu.wallSeconds, 1)} s wall): ${cpuText(c.cpu)}; ` +
        `${fmt(c.verify.windows)} windows, ${fmt(c.verify.processed)} records processed, ${fmt(c.verify.dropped)} dropped late.`,
      '',
    );
  }
  lines.push(
    '"other processes" is CPU used on the machine by anything but the processes named (other work on a shared ' +
      'box): when it is large, the run was disturbed.',
    '',
    'Semantics: (b) dedupes event ids (an index per partition, in memory up to a budget and spilled to local disk ' +
      'beyond it, restored from packed 16-byte id hashes that Redis keeps per hour) and stores the ids and the partition checkpoint in the same ' +
      'atomic Lua script as the sums, so a replayed or resent event is never counted twice; its totals exclude ' +
      `the ${fmt(d.duplicates)} resends. (c) is exactly-once for Kafka offsets and its RocksDB changelog only: it does ` +
      'not dedupe, so its totals include the resends. (a) parses JSON and nothing else.',
  );
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      events: { type: 'string' },
      quick: { type: 'boolean' },
      seed: { type: 'string' },
      skip: { type: 'string' },
      'drain-records': { type: 'string' },
      'rss-events': { type: 'string' },
      'restore-ids': { type: 'string' },
      'latency-customers': { type: 'string' },
      'streams-mode': { type: 'string' },
      'streams-threads': { type: 'string' },
      processors: { type: 'string' },
      profile: { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }
  const messages = Number(values.events ?? (values.quick ? 100_000 : 2_000_000));
  const seed = Number(values.seed ?? 7);
  const skip = new Set((values.skip ?? '').split(',').filter(Boolean));
  const streamsMode = values['streams-mode'] ?? 'papi';
  const processors = Number(values.processors ?? 1);
  if (!Number.isSafeInteger(processors) || processors < 1)
    throw new Error('--processors must be a positive integer');
  // As many stream threads as meterline gets processes, unless told otherwise: the same cores for both.
  const streamsThreads = Number(values['streams-threads'] ?? processors);
  const rssEvents = Number(values['rss-events'] ?? (values.quick ? 500_000 : 10_000_000));
  const restoreIds = Number(values['restore-ids'] ?? 1_000_000);
  const latencyCustomers = Number(values['latency-customers'] ?? 1_000);
  for (const [name, n] of Object.entries({ rssEvents, restoreIds, latencyCustomers }))
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name}: must be a positive integer`);
  if (!Number.isSafeInteger(messages) || messages < 1_000)
    throw new Error('--events must be an integer ≥ 1000');
  if (!Number.isSafeInteger(seed)) throw new Error('--seed must be an integer');
  if (!['papi', 'dsl'].includes(streamsMode)) throw new Error('--streams-mode must be papi or dsl');
  for (const s of skip)
    if (!['bare', 'processor', 'streams', 'worker', 'rss10m', 'restore', 'latency'].includes(s))
      throw new Error(`--skip: unknown phase ${s}`);

  say('== stack (Kafka + Redis)');
  const stack = await ensureServices(['kafka', 'redis'], { log: (line) => say(`  ${line}`) });
  const brokers = stack.env.KAFKA_BROKERS as string;
  const redisUrl = stack.env.REDIS_URL as string;
  const status = await stackStatus({ probe: false });
  const pidOf = (name: string) => {
    const s = status.find((x) => x.name === name);
    return s && !s.external && s.alive ? s.record?.pid : undefined;
  };

  const runId = `bench-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}-${randomBytes(2).toString('hex')}`;
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 5 });
  const kafka = new Kafka({
    clientId: 'meterline-bench',
    brokers: brokers.split(','),
    logLevel: logLevel.ERROR,
    retry: { retries: 8 },
  });
  const logsDir = path.join(RESULTS, 'logs');
  mkdirSync(logsDir, { recursive: true });
  const nowMs = Date.now();
  // Phase (e)'s larger dataset differs in size only.
  const datasetOptions = {
    messages,
    customers: CUSTOMERS,
    dimensions: DIMENSIONS,
    hours: HOURS,
    nowMs,
    duplicateRate: DUPLICATE_RATE,
    seed,
  };
  const dataset = new Dataset(datasetOptions);
  const ctx: Ctx = {
    runId,
    topic: `${runId}-usage`,
    kafka,
    brokers,
    redisUrl,
    redis,
    expected: dataset.expected,
    kafkaPid: pidOf('kafka'),
    redisPid: pidOf('redis'),
    logsDir,
    timeoutMs: 120_000 + messages,
    children: new Set(),
    stateDirs: [],
    profileDir: values.profile ? path.join(logsDir, `${runId}-profile`) : undefined,
  };

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    say('\ninterrupted: cleaning up …');
    void (values.keep ? Promise.resolve() : cleanup(ctx)).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const redisVersion = parseInfo(await redis.info('server')).redis_version ?? 'unknown';
    const mach = machine(redisVersion);
    say(
      `== machine: ${mach.nproc} cores, ${mach.cpuModel}, ${mach.memoryGiB} GiB, Node ${mach.node}, ${mach.java}`,
    );
    say(`== run ${runId}`);

    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic: ctx.topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      });
    } finally {
      await admin.disconnect();
    }

    say(`== produce ${fmt(messages)} messages to ${ctx.topic} (${PARTITIONS} partitions)`);
    const produced = await produce(ctx, dataset, messages);
    const e = dataset.expected;
    say(
      `  ${fmt(produced.messagesPerSec)} msg/s, ${fmt(produced.mbPerSec, 1)} MB/s, ${fmt(produced.seconds, 1)} s; ` +
        `${fmt(e.unique)} events + ${fmt(e.duplicates)} resends, ${fmt(e.aggregates)} aggregates`,
    );

    const guard = async <T>(name: string, fn: () => Promise<T>): Promise<T | PhaseError | null> => {
      if (skip.has(name)) return null;
      try {
        return await fn();
      } catch (error) {
        const message = (error as Error).message ?? String(error);
        say(`  ${name} FAILED: ${message}`);
        return { error: message };
      }
    };
    say('== (a) bare kafkajs consumer');
    const bare = await guard('bare', () => runBare(ctx));
    if (ok(bare)) say(`  ${fmt(bare.eventsPerSec)} events/s (${fmt(bare.seconds, 1)} s)`);
    say('== (b) meterline processor');
    const processor = await guard('processor', () => runProcessor(ctx, processors));
    if (ok(processor)) attachProfile(ctx, processor);
    if (ok(processor))
      say(
        `  ${fmt(processor.eventsPerSec)} events/s (${fmt(processor.seconds, 1)} s), ` +
          `${fmt(processor.redis.roundTripsPer10k, 2)} Redis round trips / 10k, peak RSS ${fmt(processor.peakRssMb)} MB`,
      );
    say(`== (c) Kafka Streams (${streamsMode}, ${streamsThreads} thread${streamsThreads === 1 ? '' : 's'})`);
    const streams = await guard('streams', () => runStreams(ctx, streamsMode, streamsThreads));
    if (ok(streams)) say(`  ${fmt(streams.eventsPerSec)} events/s (${fmt(streams.seconds, 1)} s)`);
    say('== (d) metering worker drain at the 10 TPS quota');
    const worker = await guard('worker', () =>
      runWorkerDrain({
        brokers: ctx.brokers,
        redisUrl: ctx.redisUrl,
        runId,
        records: Number(values['drain-records'] ?? 60_000),
        say,
      }),
    );
    if (ok(worker))
      say(
        `  ${fmt(worker.recordsPerSec, 1)} records/s = ${fmt(worker.ofIdeal * 100, 1)} % of ${DRAIN_IDEAL_PER_SEC}; ` +
          `mean batch ${fmt(worker.meanBatch, 1)}, ${fmt(worker.throttled)} throttled`,
      );

    say(`== (e) meterline processor on ${fmt(rssEvents)} messages: peak RSS`);
    const rss10m = await guard('rss10m', () =>
      runRssScale(ctx, {
        events: rssEvents,
        dataset: new Dataset({ ...datasetOptions, messages: rssEvents }),
        partitions: PARTITIONS,
        produce,
        runProcessor,
        say,
      }),
    );
    say(`== (f) dedupe restore of ${fmt(restoreIds)} ids by a new claim`);
    const restore = await guard('restore', () =>
      runDedupeRestore({ redisUrl: ctx.redisUrl, runId, ids: restoreIds, say }),
    );
    if (ok(restore)) say(`  ${restoreRow(restore)[4]}`);
    say(
      `== (g) close → accepted latency, ${fmt(latencyCustomers * 5)} records, default settings but no quota (rate limit raised)`,
    );
    const latency = await guard('latency', () =>
      runCloseLatency({
        brokers: ctx.brokers,
        redisUrl: ctx.redisUrl,
        runId,
        customers: latencyCustomers,
        say,
      }),
    );
    if (ok(latency)) say(`  ${latencyRow(latency)[2]} s`);

    const results: Results = {
      runId,
      startedAt: new Date(nowMs).toISOString(),
      machine: mach,
      dataset: { ...e, partitions: PARTITIONS, customers: CUSTOMERS, dimensions: DIMENSIONS.length, seed },
      produce: produced,
      bare,
      processor,
      streams,
      worker,
      rss10m,
      restore,
      latency,
      ratios: {
        bOverA: ok(processor) && ok(bare) ? processor.eventsPerSec / bare.eventsPerSec : null,
        bOverC: ok(processor) && ok(streams) ? processor.eventsPerSec / streams.eventsPerSec : null,
      },
      goals: [],
    };
    results.goals = goals(results);
    const md = markdown(results);
    say('');
    say(md);
    writeFileSync(path.join(RESULTS, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(path.join(RESULTS, 'latest.md'), md);
    copyFileSync(path.join(RESULTS, 'latest.json'), path.join(RESULTS, `${runId}.json`));
    copyFileSync(path.join(RESULTS, 'latest.md'), path.join(RESULTS, `${runId}.md`));
    say(
      `results: ${path.relative(process.cwd(), path.join(RESULTS, 'latest.md'))} (+ latest.json, ${runId}.*)`,
    );
    return 0;
  } finally {
    if (!interrupted) {
      if (values.keep) say(`== kept topics ${runId}-*, Redis keys ${runId}:* (--keep)`);
      else {
        say('== cleanup');
        await cleanup(ctx);
      }
      redis.disconnect();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error)?.stack ?? error}\n`);
    process.exit(1);
  },
);
