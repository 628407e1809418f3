/**
 * Redis from the distribution's `redis-server` (installed with apt-get when missing and allowed), with AOF on
 * (appendfsync everysec, no RDB snapshots), bound to 127.0.0.1, run in the foreground of a detached process.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { LOCALHOST, reuseOrPickPorts } from './ports.ts';
import { run, spawnDetached, which } from './proc.ts';
import { type ServiceContext, StackError, type StackService } from './service.ts';
import { rel, type ServiceRecord } from './state.ts';

/** A client for health probes: fails fast, never retries, never queues. Errors surface as rejections. */
export function probeClient(url: string): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  return client;
}

/**
 * AOF every second, no RDB snapshots, in the foreground (the stack records the pid; a container needs it
 * too): the one definition for the stack, its cluster and the tests' Redis container.
 */
export const REDIS_DURABILITY_ARGS = [
  '--appendonly',
  'yes',
  '--appendfsync',
  'everysec',
  '--save',
  '',
  '--daemonize',
  'no',
];

const INSTALL_HINT =
  'Install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) or your package manager, ' +
  'or point REDIS_URL at a running Redis.';

/** Finds `redis-server`; as root with apt-get, installs the Debian package (apt-get update only if needed). */
export async function ensureRedisServer(ctx: ServiceContext): Promise<string> {
  const found = which('redis-server', ctx.env);
  if (found) return found;
  const aptGet = which('apt-get', ctx.env);
  const isRoot = process.getuid?.() === 0;
  if (!aptGet || !isRoot) {
    throw new StackError(
      `redis: \`redis-server\` is not on PATH${aptGet ? ' and installing needs root' : ''}. ${INSTALL_HINT}`,
    );
  }
  const env = { ...ctx.env, DEBIAN_FRONTEND: 'noninteractive' };
  const show = (line: string) => ctx.log(`  apt: ${line}`);
  const install = () => {
    ctx.log('redis-server not found: running `apt-get install -y redis-server`');
    return run(aptGet, ['install', '-y', 'redis-server'], { env, onLine: show });
  };
  let result = await install();
  if (result.code !== 0) {
    ctx.log('install failed; running `apt-get update` and retrying');
    const update = await run(aptGet, ['update'], { env, onLine: show });
    if (update.code !== 0)
      throw new StackError(`redis: apt-get update failed (exit ${update.code}). ${INSTALL_HINT}`);
    result = await install();
  }
  const installed = which('redis-server', ctx.env);
  if (result.code !== 0 || !installed) {
    throw new StackError(`redis: apt-get install redis-server failed (exit ${result.code}). ${INSTALL_HINT}`);
  }
  ctx.log(`installed ${installed}`);
  return installed;
}

export const redisService: StackService = {
  name: 'redis',
  envVar: 'REDIS_URL',
  readyTimeoutMs: 30_000,

  async health(endpoint) {
    const client = probeClient(endpoint);
    try {
      await client.connect();
      const pong = await client.ping();
      if (pong !== 'PONG') throw new Error(`PING answered ${pong}`);
    } finally {
      client.disconnect();
    }
  },

  async start(ctx, previous) {
    const bin = await ensureRedisServer(ctx);
    const { ports } = await reuseOrPickPorts(['port'] as const, previous?.ports);
    const dataDir = path.join(ctx.paths.dir, 'redis-data');
    const logFile = path.join(ctx.paths.logsDir, 'redis.log');
    mkdirSync(dataDir, { recursive: true });
    const proc = await spawnDetached(
      bin,
      [
        '--port',
        String(ports.port),
        '--bind',
        ctx.host,
        // Protected mode refuses every non-loopback client of a password-less Redis. Bound to another
        // address of this machine (METERLINE_STACK_HOST, for a local cluster's pods), it must let them in.
        '--protected-mode',
        ctx.host === LOCALHOST ? 'yes' : 'no',
        '--dir',
        dataDir,
        ...REDIS_DURABILITY_ARGS,
      ],
      { cwd: dataDir, env: ctx.env, logFile },
    );
    ctx.log(`started pid ${proc.pid} on ${ctx.host}:${ports.port} (AOF in ${rel(ctx.paths, dataDir)})`);
    return {
      ...proc,
      ports,
      endpoint: `redis://${ctx.host}:${ports.port}`,
      log: rel(ctx.paths, logFile),
      startedAt: new Date().toISOString(),
    } satisfies ServiceRecord;
  },
};
