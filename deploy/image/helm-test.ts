/**
 * The chart's `helm test` (helm/meterline/templates/tests/helm-test.yaml) runs this from the image:
 *
 *   node deploy/image/helm-test.ts --health=processor=http://…-processor-metrics.<ns>.svc:9464/readyz … [--timeout=60s]
 *
 * It checks, and prints one line per check:
 *   - each role's health endpoint answers 200 (polled until the timeout: a pod may still be starting);
 *   - Kafka answers: the cluster's metadata from the bootstrap brokers (KAFKA_BROKERS), with the same TLS and SASL
 *     settings the roles use (KAFKA_SSL, KAFKA_SSL_CA_FILE, KAFKA_SASL_*);
 *   - Redis answers PING at REDIS_URL (REDIS_CLUSTER, REDIS_TLS_CA_FILE), password included as the roles get it.
 *
 * A health URL on a Service's cluster name (`<service>.<namespace>.svc`) is reached at the address Kubernetes
 * gives the Pod in `<SERVICE>_SERVICE_HOST` when it has one (the Pod runs with service links; the Services exist
 * before `helm test`), so the check does not depend on cluster DNS; otherwise the name is resolved as usual.
 *
 * Exit 0 when every check passed, 1 when one failed (each failure says what and why), 2 on bad arguments.
 * `--no-health` skips the health checks (the chart passes it when the roles have no metrics Service).
 */
import { parseArgs } from 'node:util';
import { createKafka } from '../../src/kafka/client.ts';
import { createLogger } from '../../src/log.ts';
import { createRedis } from '../../src/redis/client.ts';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

export interface HelmTestOptions {
  /** role → URL of its health endpoint. */
  health: Map<string, string>;
  brokers: string[];
  redisUrl: string;
  redisCluster: boolean;
  redisTlsCaFile?: string;
  timeoutMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Rejects with `what` timed out after `ms`, so a check that keeps retrying still ends. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * `http://<service>.<ns>.svc…` → the Service's cluster IP from `<SERVICE>_SERVICE_HOST` when the environment has
 * it (Kubernetes' service links); any other URL as it is.
 */
export function serviceUrl(url: string, env: NodeJS.ProcessEnv = process.env): string {
  const u = new URL(url);
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.[a-z0-9-]+\.svc(\.cluster\.local)?$/.exec(u.hostname);
  const host = m ? env[`${(m[1] as string).toUpperCase().replaceAll('-', '_')}_SERVICE_HOST`] : undefined;
  if (!host) return url;
  u.hostname = host.includes(':') ? `[${host}]` : host;
  return u.toString();
}

async function checkHealth(role: string, given: string, deadline: number): Promise<CheckResult> {
  const url = serviceUrl(given);
  let last = '';
  do {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (res.status === 200) return { name: `${role} health`, ok: true, detail: `${url} answered 200` };
      last = `${url} answered ${res.status}`;
    } catch (error) {
      last = `${url}: ${(error as Error).cause ?? (error as Error).message}`;
    }
    await sleep(1_000);
  } while (Date.now() < deadline);
  return { name: `${role} health`, ok: false, detail: last };
}

async function checkKafka(brokers: string[], timeoutMs: number): Promise<CheckResult> {
  if (!brokers.length) return { name: 'kafka', ok: false, detail: 'KAFKA_BROKERS is empty' };
  let admin: ReturnType<ReturnType<typeof createKafka>['admin']> | undefined;
  try {
    const kafka = createKafka({
      brokers,
      clientId: 'meterline-helm-test',
      logger: createLogger('meterline-helm-test', process.env.LOG_LEVEL ?? 'warn'),
    });
    const connected = kafka.admin();
    admin = connected;
    const cluster = await within(
      timeoutMs,
      'kafka',
      connected.connect().then(() => connected.describeCluster()),
    );
    return {
      name: 'kafka',
      ok: true,
      detail: `${cluster.brokers.length} broker(s) (controller ${cluster.controller}) via ${brokers.join(',')}`,
    };
  } catch (error) {
    return { name: 'kafka', ok: false, detail: `${brokers.join(',')}: ${(error as Error).message}` };
  } finally {
    await admin?.disconnect().catch(() => undefined);
  }
}

async function checkRedis(o: HelmTestOptions): Promise<CheckResult> {
  if (!o.redisUrl) return { name: 'redis', ok: false, detail: 'REDIS_URL is empty' };
  // Never print the password the URL may carry.
  const shown = o.redisUrl.replace(/\/\/[^@/]*@/g, '//***@');
  let redis: ReturnType<typeof createRedis> | undefined;
  try {
    redis = createRedis(o.redisUrl, {
      lazyConnect: true,
      cluster: o.redisCluster,
      commandTimeoutMs: 5_000,
      ...(o.redisTlsCaFile ? { tlsCaFile: o.redisTlsCaFile } : {}),
    });
    // A failed connection is reported by the check; ioredis would log it too.
    redis.on('error', () => undefined);
    const client = redis;
    const pong = await within(
      o.timeoutMs,
      'redis',
      client.connect().then(() => client.ping()),
    );
    return { name: 'redis', ok: pong === 'PONG', detail: `${shown} answered ${pong}` };
  } catch (error) {
    return { name: 'redis', ok: false, detail: `${shown}: ${(error as Error).message}` };
  } finally {
    redis?.disconnect();
  }
}

/** Runs every check at once; each ends by the timeout. */
export async function helmTest(o: HelmTestOptions): Promise<CheckResult[]> {
  const deadline = Date.now() + o.timeoutMs;
  return Promise.all([
    ...[...o.health].map(([role, url]) => checkHealth(role, url, deadline)),
    checkKafka(o.brokers, o.timeoutMs),
    checkRedis(o),
  ]);
}

function parseTimeout(text: string): number | undefined {
  const m = /^(\d+)(ms|s|m)?$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * ({ ms: 1, s: 1_000, m: 60_000 }[m[2] ?? 'ms'] ?? 1);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      health: { type: 'string', multiple: true, default: [] },
      'no-health': { type: 'boolean', default: false },
      timeout: { type: 'string', default: '60s' },
    },
    strict: true,
  });
  const problems: string[] = [];
  const health = new Map<string, string>();
  for (const h of values.health ?? []) {
    const at = h.indexOf('=');
    const role = h.slice(0, at);
    const url = h.slice(at + 1);
    if (at < 1 || !URL.canParse(url)) problems.push(`--health=${h}: expected <role>=<url>`);
    else health.set(role, url);
  }
  if (!health.size && !values['no-health']) problems.push('--health: at least one, or --no-health');
  const timeoutMs = parseTimeout(String(values.timeout));
  if (!timeoutMs) problems.push(`--timeout=${values.timeout}: expected e.g. 60s`);
  if (problems.length || !timeoutMs) {
    process.stderr.write(`helm-test: ${problems.join('\n  ')}\n`);
    return 2;
  }
  const results = await helmTest({
    health,
    brokers: (process.env.KAFKA_BROKERS ?? '')
      .split(',')
      .map((b) => b.trim())
      .filter(Boolean),
    redisUrl: process.env.REDIS_URL ?? '',
    redisCluster: process.env.REDIS_CLUSTER === 'true',
    ...(process.env.REDIS_TLS_CA_FILE ? { redisTlsCaFile: process.env.REDIS_TLS_CA_FILE } : {}),
    timeoutMs,
  });
  for (const r of results) process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name}: ${r.detail}\n`);
  const failed = results.filter((r) => !r.ok);
  process.stdout.write(
    failed.length
      ? `helm test: ${failed.length} of ${results.length} checks failed\n`
      : `helm test: all ${results.length} checks passed\n`,
  );
  return failed.length ? 1 : 0;
}

if (import.meta.main) {
  const code = await main();
  // A Kafka or Redis client may still retry a connection in the background: end once the output is written.
  process.stdout.write('', () => process.exit(code));
}
