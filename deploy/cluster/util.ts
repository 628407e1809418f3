/** Small helpers shared by the cluster scripts: logging with timings, a pid lock, atomic writes, commands. */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { isAlive, procStartTime } from '../stack/proc.ts';

export class ClusterError extends Error {
  override name = 'ClusterError';
}

export type Log = (line: string) => void;

export const defaultLog: Log = (line) =>
  process.stderr.write(`[cluster ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** Runs `fn`, logging '<what> …' before and '<what>: done in N s' after. */
export async function timed<T>(log: Log, what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  log(`${what} …`);
  const result = await fn();
  log(`${what}: done in ${seconds(t0)}`);
  return result;
}

/** Writes a file through a temporary sibling and a rename, so readers see the old or the new content only. */
export function writeAtomic(file: string, content: string | Buffer, mode?: number): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, mode === undefined ? {} : { mode });
  renameSync(tmp, file);
}

/**
 * Runs `fn` while holding `lockFile` (exclusive create; holds the owner's pid and start time). A lock whose owner
 * is dead is taken over; a live one is waited for, up to `timeoutMs`.
 */
export async function withLock<T>(
  lockFile: string,
  fn: () => Promise<T>,
  options: { log?: Log; timeoutMs?: number; what?: string } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 60 * 60_000;
  const deadline = Date.now() + timeoutMs;
  const me = `${process.pid} ${procStartTime(process.pid) ?? ''}`;
  let announced = false;
  mkdirSync(path.dirname(lockFile), { recursive: true });
  for (;;) {
    try {
      const fd = openSync(lockFile, 'wx');
      writeSync(fd, me);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let owner = '';
    try {
      owner = readFileSync(lockFile, 'utf8').trim();
    } catch {
      continue; // released meanwhile
    }
    const [pidText, start] = owner.split(' ');
    const pid = Number(pidText);
    if (owner && !isAlive(pid, start || undefined)) {
      rmSync(lockFile, { force: true }); // its owner died
      continue;
    }
    if (Date.now() > deadline) {
      throw new ClusterError(`pid ${pid} holds ${lockFile} for more than ${timeoutMs / 1000} s`);
    }
    if (!announced) {
      options.log?.(
        `waiting for pid ${pid || '?'} (${options.what ?? 'another caller'}) to release ${lockFile}`,
      );
      announced = true;
    }
    await sleep(500);
  }
  try {
    return await fn();
  } finally {
    rmSync(lockFile, { force: true });
  }
}

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion. `check` (default true) throws a ClusterError with the tail of its output when it
 * exits non-zero. `onLine` receives output lines as they arrive.
 */
export function cmd(
  command: string,
  args: readonly string[],
  options: {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    check?: boolean;
    onLine?: (line: string) => void;
    input?: string;
  } = {},
): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    const lines = (text: string) => {
      if (!options.onLine) return;
      pending += text;
      const parts = pending.split(/\r?\n/);
      pending = parts.pop() ?? '';
      for (const line of parts) if (line.trim()) options.onLine(line);
    };
    child.stdout?.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
      lines(c.toString('utf8'));
    });
    child.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
      lines(c.toString('utf8'));
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
    child.once('error', (err) => reject(new ClusterError(`cannot run ${command}: ${err.message}`)));
    child.once('close', (code) => {
      if (options.onLine && pending.trim()) options.onLine(pending);
      if (code !== 0 && options.check !== false) {
        const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-30).join('\n');
        reject(new ClusterError(`${[command, ...args].join(' ')} exited ${code}:\n${tail}`));
        return;
      }
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls `probe` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  options: { timeoutMs?: number; intervalMs?: number; detail?: () => string } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      const detail = options.detail?.() ?? '';
      throw new ClusterError(
        `timed out after ${timeoutMs / 1000} s waiting for ${what}` +
          (lastError ? ` (last error: ${lastError})` : '') +
          (detail ? `\n${detail}` : ''),
      );
    }
    await sleep(options.intervalMs ?? 300);
  }
}
