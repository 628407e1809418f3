/**
 * The small contract every local service implements. Adding one (e.g. Apicurio on Java 25, Jaeger) means writing
 * a module that exports a `StackService` and listing it in index.ts; the orchestration (reuse, ports, pids, logs,
 * readiness, stop) is shared.
 */
import path from 'node:path';
import { isAlive, stopProcess, tailFile } from './proc.ts';
import type { ServiceName, ServiceRecord, StackPaths } from './state.ts';

export interface ServiceContext {
  paths: StackPaths;
  /** The environment the stack was asked to use (defaults to process.env). */
  env: NodeJS.ProcessEnv;
  /** Progress output, already prefixed with the service name. */
  log: (line: string) => void;
  /**
   * The address services listen on and advertise: 127.0.0.1 by default; the machine's own interface
   * address when pods of a local cluster must reach them (StackOptions.host, METERLINE_STACK_HOST).
   */
  host: string;
}

export interface StackService {
  readonly name: ServiceName;
  /** The environment variable the app reads; when it is set, the service is external and never started. */
  readonly envVar: string;
  /** How long `start` may take to become healthy (a cold JVM needs far longer than Redis). */
  readonly readyTimeoutMs: number;
  /** Started only when asked for by name (`ensureServices([name])`, `stack:up --only`), never by `ensureStack()`. */
  readonly optional?: boolean;
  /** One health probe against an endpoint; resolves when healthy, rejects with the reason otherwise. */
  health(endpoint: string): Promise<void>;
  /**
   * Prepares prerequisites (downloads, installs, data dirs) and spawns the process detached. Resolves with its
   * record as soon as it is spawned; the caller then waits for `health`. `previous` is the last record (dead), so
   * ports and formatted data can be reused.
   */
  start(ctx: ServiceContext, previous: ServiceRecord | undefined): Promise<ServiceRecord>;
  /** Optional custom stop; the default is SIGTERM to the pid, 30 s grace, then SIGKILL to its group. */
  stop?(record: ServiceRecord, ctx: ServiceContext): Promise<void>;
}

export class StackError extends Error {
  override name = 'StackError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Polls `service.health(endpoint)` until it passes. Fails early when the process exits, and after `timeoutMs`
 * with the tail of its log. Prints progress every few seconds.
 */
export async function waitHealthy(
  service: StackService,
  endpoint: string,
  ctx: ServiceContext,
  options: { timeoutMs: number; record?: ServiceRecord; what?: string },
): Promise<void> {
  const started = Date.now();
  const deadline = started + options.timeoutMs;
  const what = options.what ?? endpoint;
  const logFile = options.record ? path.resolve(ctx.paths.root, options.record.log) : undefined;
  let lastError = '';
  let nextReport = started + 5_000;
  for (;;) {
    try {
      await service.health(endpoint);
      return;
    } catch (err) {
      lastError = reason(err);
    }
    const now = Date.now();
    if (options.record && !isAlive(options.record.pid, options.record.startTime)) {
      throw new StackError(
        `${service.name}: process ${options.record.pid} exited before it became healthy` +
          (logFile ? `; last lines of ${options.record.log}:\n${tailFile(logFile)}` : ''),
      );
    }
    if (now >= deadline) {
      throw new StackError(
        `${service.name}: ${what} not healthy after ${Math.round(options.timeoutMs / 1000)} s (${lastError})` +
          (logFile ? `; last lines of ${options.record?.log}:\n${tailFile(logFile)}` : ''),
      );
    }
    if (now >= nextReport) {
      ctx.log(`waiting for ${what} (${Math.round((now - started) / 1000)} s: ${lastError})`);
      nextReport = now + 5_000;
    }
    await sleep(Math.min(500, Math.max(0, deadline - now)));
  }
}

export async function stopService(service: StackService, record: ServiceRecord, ctx: ServiceContext) {
  if (service.stop) {
    await service.stop(record, ctx);
    return;
  }
  const result = await stopProcess(record.pid, record.startTime);
  if (result !== 'not-running') ctx.log(`stopped pid ${record.pid} (${result})`);
}
