/** A redis-server of a test's own (a failover, a FLUSHALL), so the shared one is never touched. */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { waitFor } from './harness.ts';

/** A free loopback port, from the OS. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A redis-server of the test's own, without persistence. */
export async function startRedisServer(args: string[] = []): Promise<{ port: number; proc: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'failover-redis-'));
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await waitFor(async () => ((await client.ping().catch(() => undefined)) === 'PONG' ? true : undefined));
  } finally {
    client.disconnect();
  }
  return { port, proc };
}
