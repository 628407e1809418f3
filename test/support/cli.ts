/** Runs the real `meterline` CLI as a child process and collects what it printed and how it ended. */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** The npm bin entry: a plain JavaScript launcher that checks the Node version before loading main.ts. */
export const BIN = fileURLToPath(new URL('../../src/cli/meterline.mjs', import.meta.url));

export interface CliResult {
  /** null when the process was killed at the hard limit. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** stderr without blank lines. */
  stderrLines: string[];
}

/**
 * `meterline …args` with `env` over this process's environment (a value of undefined removes a variable).
 * A process still running after `hardLimitMs` is killed and reported with code null.
 */
export function cli(
  args: string[],
  env: Record<string, string | undefined> = {},
  options: { hardLimitMs?: number; input?: string; node?: string; entry?: string } = {},
): Promise<CliResult> {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const child = spawn(
    options.node ?? process.execPath,
    [...(options.node ? [] : ['--disable-warning=TimeoutNegativeWarning']), options.entry ?? MAIN, ...args],
    { env: merged, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  child.stdin.end(options.input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), options.hardLimitMs ?? 60_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({
        code,
        stdout,
        stderr,
        stderrLines: stderr.split('\n').filter((l) => l.trim() !== ''),
      });
    });
  });
}

/** A local TCP port nothing listens on (taken from the OS, then released). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Box-drawing characters: cli-table3's borders. */
export const BOX = /[\u2500-\u257f]/;
