/**
 * Redis connections and Lua script registration. Scripts live in ./lua/<name>-<numberOfKeys>.lua (or
 * <name>.lua when the count varies), each with a header that lists KEYS, ARGV and the reply; only the
 * typed functions of ./scripts.ts call them. Scripts are registered under their plain name: EVALSHA names
 * a script by its content's SHA, so two versions in a rolling deploy never run each other's script.
 *
 * Standalone Redis and Redis Cluster are both supported. On a cluster every script, MULTI and pipeline must
 * touch a single slot (see keys.ts); scripts are sent as EVALSHA per node connection and fall back to EVAL
 * when a node answers NOSCRIPT (ioredis does this per socket).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Cluster, type ClusterOptions, Redis } from 'ioredis';

const SCRIPT_NAMES = [
  'applyBatch',
  'finalizeHour',
  'cutCustomer',
  'markEmitted',
  'rateLimit',
  'applyCustomerEvent',
  'rateWindow',
  'migrateDirectory',
  'linkTenant',
  'importSeenIds',
] as const;
type ScriptName = (typeof SCRIPT_NAMES)[number];

type ScriptArg = string | number | Buffer;

/**
 * meterline's scripts, defined on a client: KEYS then ARGV, the key count taken from the file name. Only
 * applyBatch, whose key count depends on the batch, takes it first. Called through ./scripts.ts only.
 */
interface ScriptMethods {
  applyBatch(numKeys: number, ...keysAndArgs: ScriptArg[]): Promise<(number | string)[]>;
  finalizeHour(...keysAndArgs: ScriptArg[]): Promise<number[]>;
  cutCustomer(...keysAndArgs: ScriptArg[]): Promise<number[]>;
  markEmitted(...keysAndArgs: ScriptArg[]): Promise<number>;
  rateLimit(...keysAndArgs: ScriptArg[]): Promise<number>;
  applyCustomerEvent(...keysAndArgs: ScriptArg[]): Promise<number>;
  rateWindow(...keysAndArgs: ScriptArg[]): Promise<number>;
  migrateDirectory(...keysAndArgs: ScriptArg[]): Promise<number>;
  linkTenant(...keysAndArgs: ScriptArg[]): Promise<number>;
  importSeenIds(...keysAndArgs: ScriptArg[]): Promise<number>;
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

interface ScriptSource {
  /** The file in ./lua/: `<name>-<numberOfKeys>.lua` (BullMQ's convention), `<name>.lua` when it varies. */
  file: string;
  lua: string;
  numberOfKeys: number | undefined;
}

const LUA_DIR = new URL('./lua/', import.meta.url);

/** Every script in ./lua/, by name, with the key count its file name states. */
function loadScripts(): Record<ScriptName, ScriptSource> {
  const found = new Map<string, ScriptSource>();
  for (const file of readdirSync(LUA_DIR)) {
    const m = /^([A-Za-z]+)(?:-(\d+))?\.lua$/.exec(file);
    if (!m?.[1]) continue;
    const lua = readFileSync(new URL(file, LUA_DIR), 'utf8');
    found.set(m[1], { file, lua, numberOfKeys: m[2] === undefined ? undefined : Number(m[2]) });
  }
  return Object.fromEntries(
    SCRIPT_NAMES.map((name) => {
      const source = found.get(name);
      if (!source) throw new Error(`no Lua script for ${name} in src/redis/lua/`);
      return [name, source];
    }),
  ) as Record<ScriptName, ScriptSource>;
}

export const SCRIPTS = loadScripts();

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
  for (const name of SCRIPT_NAMES) {
    const { lua, numberOfKeys } = SCRIPTS[name];
    redis.defineCommand(name, numberOfKeys === undefined ? { lua } : { lua, numberOfKeys });
  }
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
