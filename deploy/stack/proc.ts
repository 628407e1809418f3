/** Process helpers: detached spawning, liveness by pid (+ start time, against pid reuse), stop by pid, RSS. */
import { spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot) and the state letter. */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = rest[0];
    const startTime = rest[19];
    if (state === undefined || startTime === undefined) return undefined;
    return { state, startTime };
  } catch {
    return undefined;
  }
}

export function procStartTime(pid: number): string | undefined {
  return procStat(pid)?.startTime;
}

/**
 * True when `pid` runs (zombies count as dead). With `startTime`, the process must also be the very one that was
 * recorded, so a recycled pid is never mistaken for (or signalled as) one of ours.
 */
export function isAlive(pid: number | undefined, startTime?: string): boolean {
  if (!pid || pid <= 0) return false;
  const stat = procStat(pid);
  if (stat) {
    if (stat.state === 'Z' || stat.state === 'X') return false;
    return startTime === undefined || stat.startTime === startTime;
  }
  if (existsSync('/proc/self/stat')) return false;
  // No procfs (not Linux): fall back to signal 0.
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Resident set size in kB, from /proc/<pid>/status (VmRSS). */
export function rssKb(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const RUN_HEADER = '==== ';

export interface DetachedProcess {
  pid: number;
  startTime: string;
}

/**
 * Spawns `command` in its own process group with stdout/stderr appended to `logFile`, and unrefs it so the
 * caller can exit while the service keeps running.
 */
export function spawnDetached(
  command: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; logFile: string },
): Promise<DetachedProcess> {
  const fd = openSync(options.logFile, 'a');
  writeSync(fd, `\n${RUN_HEADER}${new Date().toISOString()} starting: ${[command, ...args].join(' ')}\n`);
  return new Promise((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(command, args, {
        cwd: options.cwd,
        env: options.env ?? process.env,
        detached: true,
        stdio: ['ignore', fd, fd],
      });
    } catch (err) {
      closeSync(fd);
      reject(err);
      return;
    }
    child.once('error', (err) => {
      closeSync(fd);
      reject(new Error(`cannot start ${command}: ${err.message}`));
    });
    child.once('spawn', () => {
      closeSync(fd);
      child.unref();
      const pid = child.pid as number;
      // /proc/<pid>/stat exists as soon as fork() returned, which precedes 'spawn'.
      resolve({ pid, startTime: procStartTime(pid) ?? '' });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type StopResult = 'not-running' | 'terminated' | 'killed';

/**
 * Stops a process we started: SIGTERM to the pid, wait up to `graceMs`, then SIGKILL to its process group (it
 * was spawned detached, so it leads its own group). Never signals a pid whose start time no longer matches.
 */
export async function stopProcess(pid: number, startTime: string, graceMs = 30_000): Promise<StopResult> {
  if (!isAlive(pid, startTime)) return 'not-running';
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return 'not-running';
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid, startTime)) return 'terminated';
    await sleep(100);
  }
  if (!isAlive(pid, startTime)) return 'terminated';
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 50 && isAlive(pid, startTime); i++) await sleep(100);
  return 'killed';
}

/** The last `lines` lines of a (log) file, reading at most the last 64 kB. */
export function tailFile(file: string, lines = 40): string {
  try {
    const size = statSync(file).size;
    const fd = openSync(file, 'r');
    try {
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      let text = buf.toString('utf8');
      // Only the latest run: spawnDetached starts each one with a '==== <time> starting:' line.
      const latest = text.lastIndexOf(`\n${RUN_HEADER}`);
      if (latest >= 0) text = text.slice(latest + 1);
      return text.split('\n').slice(-lines).join('\n').trimEnd();
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** Absolute path of an executable found on PATH (or in the sbin/bin dirs apt installs into), or undefined. */
export function which(command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = [
    ...(env.PATH ?? '').split(path.delimiter),
    '/usr/local/bin',
    '/usr/bin',
    '/usr/sbin',
    '/bin',
    '/sbin',
  ];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface RunResult {
  code: number | null;
  output: string;
}

/**
 * Runs a command to completion (attached, not detached), capturing stdout+stderr together. With `onLine`, each
 * output line is also passed on as it arrives (used to show apt-get progress).
 */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let pending = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output += text;
      if (!options.onLine) return;
      pending += text;
      const lines = pending.split(/\r?\n/);
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) options.onLine(line);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', (err) => reject(new Error(`cannot run ${command}: ${err.message}`)));
    child.once('close', (code) => {
      if (options.onLine && pending.trim()) options.onLine(pending);
      resolve({ code, output });
    });
  });
}
