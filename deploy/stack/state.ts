/**
 * Everything the local stack owns lives in ONE git-ignored folder at the repo root:
 *   .stack/state.json        ports, pids (+ start times), endpoints, log paths
 *   .stack/kafka-data/       Kafka log.dirs (formatted once)
 *   .stack/redis-data/       Redis AOF
 *   .stack/redis-cluster/    one dir per node of the optional Redis Cluster (nodes.conf, AOF)
 *   .stack/logs/<svc>.log    service stdout/stderr
 *   .stack/lock              held while `up`/`down` run, so two callers never race
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive, procStartTime } from './proc.ts';

export type ServiceName = 'kafka' | 'redis' | 'emulator' | 'registry' | 'jaeger' | 'redis-cluster';

export interface ServiceRecord {
  pid: number;
  /** /proc start time of `pid`; guards against signalling a recycled pid. */
  startTime: string;
  /** Named ports, e.g. { broker, controller } for Kafka, { port } for the others. */
  ports: Record<string, number>;
  /** What the app is given: `host:port` for Kafka, a URL for the others. */
  endpoint: string;
  /** Log file, relative to the repo root. */
  log: string;
  startedAt: string;
  /** Service-specific facts that outlive one process (e.g. the Kafka cluster id it was formatted with). */
  meta?: Record<string, string | number>;
}

export interface StackState {
  version: 1;
  services: Partial<Record<ServiceName, ServiceRecord>>;
}

export interface StackPaths {
  root: string;
  dir: string;
  stateFile: string;
  logsDir: string;
  lockFile: string;
}

/** The repository root: two levels above this file (deploy/stack/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function stackPaths(root: string = REPO_ROOT): StackPaths {
  const dir = path.join(root, '.stack');
  return {
    root,
    dir,
    stateFile: path.join(dir, 'state.json'),
    logsDir: path.join(dir, 'logs'),
    lockFile: path.join(dir, 'lock'),
  };
}

export function ensureStackDirs(paths: StackPaths): void {
  mkdirSync(paths.logsDir, { recursive: true });
}

export function readState(paths: StackPaths): StackState {
  try {
    const parsed = JSON.parse(readFileSync(paths.stateFile, 'utf8')) as StackState;
    if (parsed && parsed.version === 1 && typeof parsed.services === 'object') return parsed;
  } catch {
    // missing or unreadable: start from scratch
  }
  return { version: 1, services: {} };
}

/** Atomic write (temp file + rename), so a reader never sees half a file. */
export function writeState(paths: StackPaths, state: StackState): void {
  ensureStackDirs(paths);
  const tmp = `${paths.stateFile}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, paths.stateFile);
}

export function isRecordAlive(record: ServiceRecord | undefined): record is ServiceRecord {
  return record !== undefined && isAlive(record.pid, record.startTime);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `fn` while holding `.stack/lock` (an exclusive-create file holding the owner's pid and start time). A lock
 * left by a dead process is taken over.
 */
export async function withStackLock<T>(
  paths: StackPaths,
  fn: () => Promise<T>,
  options: { timeoutMs?: number; log?: (line: string) => void } = {},
): Promise<T> {
  ensureStackDirs(paths);
  const timeoutMs = options.timeoutMs ?? 300_000;
  const deadline = Date.now() + timeoutMs;
  const me = `${process.pid} ${procStartTime(process.pid) ?? ''}`;
  let announced = false;
  let emptyReads = 0;
  for (;;) {
    try {
      const fd = openSync(paths.lockFile, 'wx');
      writeFileSync(fd, me);
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let owner = '';
    try {
      owner = readFileSync(paths.lockFile, 'utf8').trim();
    } catch {
      continue; // released between our two calls
    }
    if (!owner) {
      // Just created by another process that has not written its pid yet; stale if it stays empty.
      if (++emptyReads < 10) {
        await sleep(200);
        continue;
      }
    }
    const [pidText, startTime] = owner.split(' ');
    const pid = Number(pidText);
    if (!isAlive(pid, startTime || undefined)) {
      rmSync(paths.lockFile, { force: true }); // its owner died
      emptyReads = 0;
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `another stack command (pid ${pid}) holds ${paths.lockFile} for more than ${timeoutMs} ms`,
      );
    }
    if (!announced) {
      options.log?.(`waiting for another stack command (pid ${pid}) to finish…`);
      announced = true;
    }
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    rmSync(paths.lockFile, { force: true });
  }
}

/** Path relative to the repo root (absolute when outside it), for messages and state. */
export function rel(paths: StackPaths, file: string): string {
  const relative = path.relative(paths.root, file);
  if (!relative) return '.';
  return relative.startsWith('..') ? path.resolve(file) : relative;
}
