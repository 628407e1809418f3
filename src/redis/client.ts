/**
 * Redis connections and Lua script registration. Scripts live in ./lua/<name>.lua, each with a header
 * that lists KEYS and ARGV; only the typed wrappers in the stage modules call them.
 *
 * Standalone Redis and Redis Cluster are both supported. On a cluster every script, MULTI and pipeline must
 * touch a single slot (see keys.ts); scripts are sent as EVALSHA per node connection and fall back to EVAL
 * when a node answers NOSCRIPT (ioredis does this per socket).
 */
import { readFileSync } from 'node:fs';
import { Cluster, type ClusterOptions, Redis } from 'ioredis';

export const SCRIPT_NAMES = [
  'applyBatch',
  'finalizeHour',
  'cutCustomer',
  'markEmitted',
  'rateLimit',
  'applyCustomerEvent',
  'rateWindow',
  'migrateDirectory',
  'linkTenant',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

type ScriptArg = string | number;

/** meterline's scripts, defined on a client. Keys are passed with their count first. */
export interface ScriptMethods {
  applyBatch(numKeys: number, ...args: ScriptArg[]): Promise<(number | string)[]>;
  finalizeHour(numKeys: number, ...args: ScriptArg[]): Promise<number[]>;
  cutCustomer(numKeys: number, ...args: ScriptArg[]): Promise<number[]>;
  markEmitted(numKeys: number, ...args: ScriptArg[]): Promise<number>;
  rateLimit(numKeys: number, ...args: ScriptArg[]): Promise<number>;
  applyCustomerEvent(numKeys: number, ...args: ScriptArg[]): Promise<number>;
  rateWindow(numKeys: number, ...args: ScriptArg[]): Promise<number>;
  migrateDirectory(numKeys: number, ...args: ScriptArg[]): Promise<number>;
  linkTenant(numKeys: number, ...args: ScriptArg[]): Promise<number>;
}

/** A standalone or cluster client with meterline's scripts defined on it. */
export type ScriptedRedis = (Redis | Cluster) & ScriptMethods;

export interface RedisClientOptions {
  lazyConnect?: boolean;
  /** Connect to a Redis Cluster; `url` may then list several seed nodes, comma-separated. */
  cluster?: boolean;
  /** PEM file of a private CA, for rediss:// URLs. */
  tlsCaFile?: string;
  /**
   * A command without a reply by then fails (a late reply is discarded), so a reply lost on a silent
   * network path cannot stall a stage for ever: the stage retries, and the scripts' checkpoints and fences
   * make a retry of a write that did land harmless. Redis itself reports a script busy after 5 s.
   * @defaultValue none
   */
  commandTimeoutMs?: number;
  /**
   * No reconnection: a failed connection fails its commands at once. For one-shot commands, which must
   * end within their timeout rather than wait for a Redis that is down.
   * @defaultValue false
   */
  failFast?: boolean;
}

const SOURCES = Object.fromEntries(
  SCRIPT_NAMES.map((name) => [name, readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8')]),
) as Record<ScriptName, string>;

/** The seed URLs of a cluster: `redis://h1:p1,redis://h2:p2` (whitespace and empty entries ignored). */
export function clusterSeeds(url: string): string[] {
  return url
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
}

export function createRedis(url: string, options: RedisClientOptions = {}): ScriptedRedis {
  const lazyConnect = options.lazyConnect ?? false;
  const tls = options.tlsCaFile ? { ca: [readFileSync(options.tlsCaFile, 'utf8')] } : undefined;
  const timeout: Timeout = {
    ...(options.commandTimeoutMs ? { commandTimeout: options.commandTimeoutMs } : {}),
    ...(options.failFast ? { retryStrategy: () => null, maxRetriesPerRequest: 0 } : {}),
  };
  const redis = options.cluster
    ? createCluster(url, lazyConnect, tls, timeout, options.failFast === true)
    : createStandalone(url, lazyConnect, tls, timeout);
  for (const name of SCRIPT_NAMES) redis.defineCommand(name, { lua: SOURCES[name] });
  return redis as ScriptedRedis;
}

type Timeout = { commandTimeout?: number; retryStrategy?: () => null; maxRetriesPerRequest?: number };

function createStandalone(
  url: string,
  lazyConnect: boolean,
  tls: { ca: string[] } | undefined,
  timeout: Timeout,
): Redis {
  // ioredis turns TLS on for rediss:// itself; a private CA is added to it.
  const withCa = tls && url.startsWith('rediss:') ? { tls } : {};
  return new Redis(url, {
    lazyConnect,
    maxRetriesPerRequest: 20,
    enableAutoPipelining: false,
    ...timeout,
    ...withCa,
  });
}

function createCluster(
  url: string,
  lazyConnect: boolean,
  tls: { ca: string[] } | undefined,
  timeout: Timeout,
  failFast: boolean,
): Cluster {
  const seeds = clusterSeeds(url);
  const first = seeds[0];
  if (!first) throw new Error('REDIS_URL lists no cluster seed');
  // Credentials and TLS of the seeds apply to every node the cluster discovers (not only the seeds).
  const parsed = new URL(first);
  const redisOptions: NonNullable<ClusterOptions['redisOptions']> = { maxRetriesPerRequest: 20, ...timeout };
  if (parsed.username) redisOptions.username = decodeURIComponent(parsed.username);
  if (parsed.password) redisOptions.password = decodeURIComponent(parsed.password);
  if (parsed.protocol === 'rediss:') redisOptions.tls = tls ?? {};
  return new Cluster(seeds, {
    lazyConnect,
    enableAutoPipelining: false,
    redisOptions,
    ...(failFast ? { clusterRetryStrategy: () => null } : {}),
  });
}
