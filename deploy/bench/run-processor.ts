/**
 * Child process of `npm run bench` (deploy/bench/bench.ts): runs meterline's processor alone, so that its RSS
 * and CPU are its own, until `BENCH_EXPECTED` messages are applied to Redis (applied + duplicates + rejected),
 * then waits for `stop` from the parent. Configuration comes from the environment, as for `meterline processor`.
 *
 * It counts the Redis client's calls by wrapping ioredis' `sendCommand`: one round trip per command sent on its
 * own, one per pipeline / MULTI block (ioredis passes those commands with the pipeline's stream). For the
 * window script (evalsha, or eval after NOSCRIPT) it also records ARGV size and latency.
 *
 * Messages to the parent (IPC): started, progress (every second), done, stopped, error; with BENCH_EXPECTED=shared
 * (one of several processors of a group), handled counts instead of done, and a snapshot when asked. From the
 * parent: stop, snapshot.
 */
import { Redis } from 'ioredis';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/log.ts';

/** The processor's counters (events, applied, duplicates, failed by reason, batches, …). */
export type ProcessorStats = NonNullable<RunningPipeline['processor']>['stats'];

export interface RedisCounters {
  /** Client calls that waited for a reply: single commands + pipelines/transactions. */
  roundTrips: number;
  commands: Record<string, number>;
  script: {
    calls: number;
    args: number;
    argBytes: number;
    /** Sum of evalsha latencies as the client saw them (send → reply), ms. */
    latencyMs: number;
    maxLatencyMs: number;
  };
}

export interface ProcessorSnapshot {
  at: number;
  stats: ProcessorStats;
  redis: RedisCounters;
  cpu: NodeJS.CpuUsage;
  rssKb: number;
  /** Where the memory is: V8's heap (committed) and what lives outside it (Buffers, typed arrays). */
  heapTotalKb: number;
  externalKb: number;
}

export type ToParent =
  | { type: 'started'; startedAt: number; joinedAt: number }
  | { type: 'progress'; snapshot: ProcessorSnapshot }
  | { type: 'done'; doneAt: number; snapshot: ProcessorSnapshot }
  /** With BENCH_EXPECTED=shared (several processors in one group): messages handled so far, when it changes. */
  | { type: 'handled'; count: number; at: number }
  | { type: 'snapshot'; snapshot: ProcessorSnapshot }
  | { type: 'stopped'; snapshot: ProcessorSnapshot }
  | { type: 'error'; message: string };

export type ToChild = { type: 'stop' } | { type: 'snapshot' };

const counters: RedisCounters = {
  roundTrips: 0,
  commands: {},
  script: { calls: 0, args: 0, argBytes: 0, latencyMs: 0, maxLatencyMs: 0 },
};

interface SentCommand {
  name: string;
  args: unknown[];
  promise: Promise<unknown>;
}
type SendCommand = (this: Redis, command: SentCommand, stream?: object, ...rest: unknown[]) => unknown;

function countRedisCalls(): void {
  const proto = Redis.prototype as unknown as { sendCommand: SendCommand };
  const original = proto.sendCommand;
  const pipelines = new WeakSet<object>();
  proto.sendCommand = function (this: Redis, command: SentCommand, stream?: object, ...rest: unknown[]) {
    counters.commands[command.name] = (counters.commands[command.name] ?? 0) + 1;
    if (stream === undefined) counters.roundTrips += 1;
    else if (!pipelines.has(stream)) {
      pipelines.add(stream);
      counters.roundTrips += 1;
    }
    const result = original.call(this, command, stream, ...rest);
    if (command.name === 'evalsha' || command.name === 'eval') {
      const s = counters.script;
      s.calls += 1;
      s.args += command.args.length;
      for (const a of command.args)
        s.argBytes +=
          typeof a === 'string' ? Buffer.byteLength(a) : Buffer.isBuffer(a) ? a.length : String(a).length;
      const t0 = performance.now();
      const settle = () => {
        const ms = performance.now() - t0;
        s.latencyMs += ms;
        if (ms > s.maxLatencyMs) s.maxLatencyMs = ms;
      };
      command.promise.then(settle, settle);
    }
    return result;
  };
}

function send(message: ToParent): void {
  process.send?.(message);
}

function memoryKb(): Pick<ProcessorSnapshot, 'rssKb' | 'heapTotalKb' | 'externalKb'> {
  const m = process.memoryUsage();
  return {
    rssKb: Math.round(m.rss / 1024),
    heapTotalKb: Math.round(m.heapTotal / 1024),
    externalKb: Math.round(m.external / 1024),
  };
}

function snapshot(running: RunningPipeline): ProcessorSnapshot {
  const stats = running.processor?.stats;
  if (!stats) throw new Error('the pipeline runs no processor');
  return {
    at: Date.now(),
    stats: structuredClone(stats),
    redis: structuredClone(counters),
    cpu: process.cpuUsage(),
    ...memoryKb(),
  };
}

/** Messages whose fate is settled in Redis: counted, dropped as duplicates, or rejected (dead-lettered). */
export function handled(stats: ProcessorStats): number {
  const rejected = Object.values(stats.failed as Record<string, number>).reduce((a, b) => a + b, 0);
  const skipped = (stats as { replaySkipped?: number }).replaySkipped ?? 0;
  return stats.applied + stats.duplicates + rejected + skipped;
}

async function main(): Promise<void> {
  // 'shared': one of several processors of a group; the parent adds up what each handled.
  const shared = process.env.BENCH_EXPECTED === 'shared';
  const expected = shared ? Number.POSITIVE_INFINITY : Number(process.env.BENCH_EXPECTED);
  if (!shared && (!Number.isSafeInteger(expected) || expected <= 0))
    throw new Error('BENCH_EXPECTED must be a count or "shared"');
  countRedisCalls();
  const config = loadConfig(['processor'], process.env);
  const logger = createLogger('bench-processor', config.logLevel);
  const startedAt = Date.now();
  const running = await startPipeline(config, logger, { processor: true, worker: false });
  send({ type: 'started', startedAt, joinedAt: Date.now() });

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(progress);
    clearInterval(watch);
    await running.stop();
    // Exit explicitly (a --cpu-prof profile is written on exit), once the parent has the message.
    process.send?.({ type: 'stopped', snapshot: snapshot(running) } satisfies ToParent, () =>
      process.exit(0),
    );
  };
  process.on('message', (m: ToChild) => {
    if (m.type === 'stop') void stop();
    else if (m.type === 'snapshot') send({ type: 'snapshot', snapshot: snapshot(running) });
  });
  process.once('SIGTERM', () => void stop());

  const progress = setInterval(() => send({ type: 'progress', snapshot: snapshot(running) }), 1_000);
  let done = false;
  // Fine-grained: the completion time is read off this check.
  let told = 0;
  const watch = setInterval(() => {
    const stats = running.processor?.stats;
    if (shared && stats && handled(stats) !== told) {
      told = handled(stats);
      send({ type: 'handled', count: told, at: Date.now() });
    }
    if (!done && stats && handled(stats) >= expected) {
      done = true;
      clearInterval(watch);
      send({ type: 'done', doneAt: Date.now(), snapshot: snapshot(running) });
    }
  }, 5);
}

process.on('unhandledRejection', (error) => {
  send({ type: 'error', message: String((error as Error)?.stack ?? error) });
});

main().catch((error: unknown) => {
  send({ type: 'error', message: String((error as Error)?.stack ?? error) });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 200).unref();
});
