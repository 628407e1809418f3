/**
 * A cross-process exclusive lock file for the tool cache (self-contained: the tools must build on a bare machine
 * before anything else in deploy/ runs).
 *
 * The lock file holds `<pid> <start time> <nonce>`. It is created atomically with its content (written to a
 * private temp file, then hard-linked to the lock name, which fails if the lock exists), so it is never seen
 * empty. A lock whose owner is dead (pid gone, or reused by another process: the start time differs) is broken by
 * renaming it aside and checking that the renamed file is the stale one; if another process took the lock in
 * between, it is linked back.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot (undefined without procfs). */
export function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** True when `pid` runs (a zombie counts as dead). */
export function pidAlive(pid: number): boolean {
  return ownerAlive(String(pid));
}

function ownerAlive(owner: string): boolean {
  const [pidText, startTime] = owner.split(' ');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (existsSync('/proc/self/stat')) {
    const now = procStartTime(pid);
    if (now === undefined) return false;
    try {
      const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const letter = state.slice(state.lastIndexOf(')') + 2, state.lastIndexOf(')') + 3);
      if (letter === 'Z' || letter === 'X') return false;
    } catch {
      return false;
    }
    return !startTime || now === startTime;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readOwner(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export interface LockOptions {
  /** Give up after this long while a live process holds the lock (default 90 min: a cold jaeger build is ~10). */
  timeoutMs?: number;
  /** Called once when we start waiting for another holder. */
  onWait?: (ownerPid: number) => void;
}

/** Runs `fn` while holding the exclusive lock `file`; waits (polling) while another live process holds it. */
export async function withFileLock<T>(
  file: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 90 * 60_000;
  const deadline = Date.now() + timeoutMs;
  const nonce = randomBytes(6).toString('hex');
  const me = `${process.pid} ${procStartTime(process.pid) ?? ''} ${nonce}`;
  const mine = `${file}.${process.pid}.${nonce}`;
  let announced = false;
  writeFileSync(mine, me);
  try {
    for (;;) {
      try {
        linkSync(mine, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = readOwner(file);
      if (owner === undefined) continue; // released between our two calls
      if (!ownerAlive(owner)) {
        breakStaleLock(file, owner, nonce);
        continue;
      }
      if (Date.now() > deadline) {
        throw new Error(`${file} is held by pid ${owner.split(' ')[0]} for more than ${timeoutMs / 1000} s`);
      }
      if (!announced) {
        announced = true;
        options.onWait?.(Number(owner.split(' ')[0]));
      }
      await sleep(500);
    }
  } finally {
    rmSync(mine, { force: true });
  }
  try {
    return await fn();
  } finally {
    if (readOwner(file) === me) rmSync(file, { force: true });
  }
}

function breakStaleLock(file: string, staleOwner: string, nonce: string): void {
  const aside = `${file}.stale.${process.pid}.${nonce}`;
  try {
    renameSync(file, aside);
  } catch {
    return; // someone else broke or released it
  }
  if (readOwner(aside) !== staleOwner) {
    // A live process took the lock between our read and the rename: give it back.
    try {
      linkSync(aside, file);
    } catch {
      // EEXIST: yet another process holds it now; nothing sane to restore.
    }
  }
  rmSync(aside, { force: true });
}
