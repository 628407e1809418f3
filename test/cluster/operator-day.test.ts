/**
 * An operator's day on a real Kubernetes node (deploy/cluster) with the real image and the Helm chart:
 *
 *   1. cluster up (or the cluster KUBECONFIG names)                         → "node Ready"
 *   2. deploy/image/build.sh --save <tar>, imported into the node           → "image imported"
 *   3. this test's own stack (Kafka, Redis, the Metering emulator, Jaeger) bound to the node's address, in a
 *      temporary root, apart from the default test stack
 *   4. helm install (topics Job on, emulator as the AWS endpoint, OTLP → Jaeger) --wait
 *                                                                           → "every meterline pod Ready"
 *      then `helm test`: the chart's test Pod (the image's deploy/image/helm-test.ts) finds each role ready,
 *      Kafka and Redis reachable                                            → "helm test passed"
 *   5. a buyer registers through the registration Service (the emulator's ResolveCustomer); the tenant is
 *      in the customer directory, not in the chart's customers file
 *   6. events for a past hour produced from outside the cluster, the registered tenant's too; the emulator
 *      accepts exactly their sums; an EventBridge event through the Service unsubscribes that tenant
 *   7. the submission's trace in Jaeger, from the AWS call span back to the producer span
 *   8. helm upgrade (worker replicas, log level) and a rolling restart of the worker while a second batch
 *      is submitted: every record accepted once, no duplicates
 *   9. helm uninstall, stack stop, cluster down with its leak checks        → "clean teardown"
 *
 * With KUBECONFIG set (kind, EKS, …), the same steps run against that cluster. Its nodes cannot take an image
 * from this machine's containerd, so load it yourself and name it in METERLINE_TEST_IMAGE (e.g. build with
 * deploy/image/build.sh --save x.tar, then `kind load image-archive x.tar`); and its pods must reach this
 * machine's stack: METERLINE_STACK_HOST names the address they can reach (default: the primary IPv4).
 *
 * All waits are condition polls. Runs only under test/cluster/vitest.config.ts (`npm run test:cluster`),
 * which sets METERLINE_CLUSTER_TEST; the default suite skips it.
 */

import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { type ClusterInfo, down, importImage, up } from '../../deploy/cluster/cluster.ts';
import type { AcceptedRecord, EmulatorSnapshot } from '../../src/emulator/emulator-types.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { readAllMessages } from '../../src/kafka/read-topic.ts';
import { createLogger } from '../../src/log.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { HANDOFF_QUERY_PARAM, verifyHandoff } from '../../src/subscribe/handoff.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const ENABLED = Boolean(process.env.METERLINE_CLUSTER_TEST);
const RELEASE = 'meterline';
const NAMESPACE = 'meterline';
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string })
  .version;

const PLAN = {
  productCode: 'prod-operatorday',
  dimensions: [
    { name: 'api_calls', model: 'hourly', aggregation: 'sum' },
    { name: 'jobs', model: 'hourly', aggregation: 'sum' },
  ],
};
type Customer = { customerAwsAccountId: string; licenseArn: string };
const NAMED: Record<string, Customer> = {
  acme: {
    customerAwsAccountId: '111111111111',
    licenseArn: 'arn:aws:license-manager::111111111111:license:l-acme0000000000000000000000000001',
  },
  globex: {
    customerAwsAccountId: '222222222222',
    licenseArn: 'arn:aws:license-manager::222222222222:license:l-globex000000000000000000000000002',
  },
  initech: {
    customerAwsAccountId: '333333333333',
    licenseArn: 'arn:aws:license-manager::333333333333:license:l-initech00000000000000000000000003',
  },
};
/** 21 more tenants for the second batch: enough records that submitting them outlasts a worker restart. */
const FLEET: Record<string, Customer> = Object.fromEntries(
  Array.from({ length: 21 }, (_, i) => {
    const n = String(i + 1).padStart(2, '0');
    const account = `4000000000${n}`;
    return [
      `tenant-${n}`,
      {
        customerAwsAccountId: account,
        licenseArn: `arn:aws:license-manager::${account}:license:l-fleet${n}`,
      },
    ];
  }),
);
const CUSTOMERS: Record<string, Customer> = { ...NAMED, ...FLEET };
const TENANTS = Object.keys(NAMED);
/** A buyer that registers through the registration URL during the day: in no customers file. */
const REGISTERED: Record<string, Customer> = {
  '555555555555': {
    customerAwsAccountId: '555555555555',
    licenseArn: 'arn:aws:license-manager::555555555555:license:l-registered0000000000000000005',
  },
};
const EVENTS_API_KEY = 'operator-day-eventbridge-key-0123456789';
/** Signs the hand-off to the onboarding page; the seller's backend would hold the same key. */
const HANDOFF_SECRET = 'operator-day-handoff-signing-secret-0123456789';
const ALL_TENANTS = Object.keys(CUSTOMERS);

// ---------------------------------------------------------------------------------------------------------------
// logging and small helpers

const t0 = Date.now();
function log(line: string): void {
  const s = Math.round((Date.now() - t0) / 1000);
  process.stderr.write(`[operator-day +${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s] ${line}\n`);
}
const since = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function poll<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  detail?: () => Promise<string> | string,
  intervalMs = 1000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      const more = detail ? await detail() : '';
      throw new Error(
        `gave up after ${timeoutMs / 1000} s waiting for ${what}` +
          (lastError ? `\nlast error: ${lastError}` : '') +
          (more ? `\n${more}` : ''),
      );
    }
    await sleep(intervalMs);
  }
}

interface RunResult {
  code: number | null;
  out: string;
}

async function run(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const { spawn } = await import('node:child_process');
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(command, args, {
      env: opts.env ?? process.env,
      cwd: REPO,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.stderr?.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out }));
  });
}

async function must(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const res = await run(command, args, opts);
  if (res.code !== 0) {
    throw new Error(
      `${path.basename(command)} ${args.join(' ')} exited ${res.code}:\n${res.out.slice(-4000)}`,
    );
  }
  return res.out;
}

// ---------------------------------------------------------------------------------------------------------------
// shared state of the day

interface Day {
  cluster?: ClusterInfo;
  nodeIp?: string;
  tmp: string;
  stackRoot: string;
  stackStarted: boolean;
  ownRedis?: { pid: number; startTime: string };
  kafkaBrokers?: string;
  redisUrl?: string;
  emulatorUrl?: string;
  otlpEndpoint?: string;
  jaegerQuery?: string;
  helm?: string;
  installed: boolean;
  registrationUrl?: string;
  /** The namespace exists (made before the install, for the Secret): teardown removes it even if the install failed. */
  namespaceMade?: boolean;
  portForward?: ChildProcess;
  kafka?: Kafka;
  batch1?: RawEvent[];
  batch2?: RawEvent[];
  hour1: number;
  hour2: number;
  traceProducer: boolean;
  tornDown: boolean;
  failedStep?: string;
}

const day: Day = {
  tmp: '',
  stackRoot: '',
  stackStarted: false,
  installed: false,
  // fixed at the start: the hour before the current one, and the one before it (batch 2)
  hour1: hourStart(Date.now()) - HOUR_MS,
  hour2: hourStart(Date.now()) - 2 * HOUR_MS,
  traceProducer: false,
  tornDown: false,
};

/** Runs a step; a failed required step makes the later required steps skip (teardown always runs). */
async function step(name: string, fn: () => Promise<void>, required = true): Promise<void> {
  if (required && day.failedStep) throw new Error(`skipped: step "${day.failedStep}" failed before`);
  const t = Date.now();
  log(`── ${name}`);
  try {
    await fn();
    log(`── ${name}: ok in ${since(t)}`);
  } catch (err) {
    if (required) day.failedStep = name;
    log(`── ${name}: FAILED after ${since(t)}: ${(err as Error).message.split('\n')[0]}`);
    throw err;
  }
}

function kubectl(...args: string[]): Promise<string> {
  const c = day.cluster as ClusterInfo;
  return must(c.kubectl, ['--kubeconfig', c.kubeconfig, ...args]);
}

function helm(...args: string[]): Promise<string> {
  const c = day.cluster as ClusterInfo;
  return must(day.helm as string, ['--kubeconfig', c.kubeconfig, ...args], {
    env: {
      ...process.env,
      HELM_CACHE_HOME: path.join(day.tmp, 'helm', 'cache'),
      HELM_CONFIG_HOME: path.join(day.tmp, 'helm', 'config'),
      HELM_DATA_HOME: path.join(day.tmp, 'helm', 'data'),
    },
  });
}

async function podSummary(): Promise<string> {
  try {
    const pods = await kubectl('get', 'pods', '-n', NAMESPACE, '-o', 'wide');
    const events = await kubectl('get', 'events', '-n', NAMESPACE, '--sort-by=.lastTimestamp');
    // The last lines a restarting container wrote say why it exits.
    const logs: string[] = [];
    for (const line of pods.split('\n').slice(1)) {
      const [name, , , restarts] = line.trim().split(/\s+/);
      if (!name || !restarts || restarts === '0') continue;
      const last = await kubectl('logs', '-n', NAMESPACE, name, '--previous', '--tail=15').catch(
        (err: Error) => `(no logs: ${err.message.split('\n')[0]})`,
      );
      logs.push(`── ${name} (previous container):\n${last.trim()}`);
    }
    return [pods, events.split('\n').slice(-15).join('\n'), ...logs].join('\n');
  } catch (err) {
    return `(no pod summary: ${(err as Error).message.split('\n')[0]})`;
  }
}

async function snapshot(): Promise<EmulatorSnapshot> {
  const res = await fetch(`${day.emulatorUrl}/_emulator/records`);
  if (!res.ok) throw new Error(`GET /_emulator/records answered ${res.status}`);
  return (await res.json()) as EmulatorSnapshot;
}

/** Per `awsId|dimension|hour`, the sum of distinct event ids. */
function expectedSums(events: readonly RawEvent[]): Map<string, number> {
  const seen = new Set<string>();
  const out = new Map<string, number>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const aws = ((CUSTOMERS[e.customer] ?? REGISTERED[e.customer]) as Customer).customerAwsAccountId;
    const key = `${aws}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
    out.set(key, (out.get(key) ?? 0) + e.quantity);
  }
  return out;
}

function acceptedSums(records: readonly AcceptedRecord[], hours: Set<string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of records) {
    if (!hours.has(r.timestamp)) continue;
    const key = `${r.customer}|${r.dimension}|${r.timestamp}`;
    out.set(key, (out.get(key) ?? 0) + r.quantity);
  }
  return out;
}

function recordCounts(records: readonly AcceptedRecord[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of records) {
    const key = `${r.customer}|${r.dimension}|${r.timestamp}`;
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

async function waitAccepted(expected: Map<string, number>, hours: Set<string>, timeoutMs: number) {
  return poll(
    `the emulator to accept ${expected.size} records for ${[...hours].join(', ')}`,
    async () => {
      const snap = await snapshot();
      const got = acceptedSums(snap.records, hours);
      return got.size >= expected.size ? { snap, got } : undefined;
    },
    timeoutMs,
    async () => {
      const snap = await snapshot().catch(() => undefined);
      const got = snap ? acceptedSums(snap.records, hours) : new Map();
      return `${got.size} of ${expected.size} records accepted so far; calls ${JSON.stringify(snap?.calls)} errors ${JSON.stringify(snap?.errors)}\n${await podSummary()}`;
    },
    2000,
  );
}

/** A throwaway Redis on the node address (protected mode off: only this machine and its pods reach it). */
async function startOwnRedis(nodeIp: string): Promise<string> {
  const { freePort } = await import('../../deploy/stack/ports.ts');
  const { spawnDetached, which } = await import('../../deploy/stack/proc.ts');
  const bin = which('redis-server');
  if (!bin) throw new Error('redis-server is not installed (the stack installs it on its first run)');
  const port = await freePort(nodeIp);
  const dir = path.join(day.tmp, 'redis');
  mkdirSync(dir);
  const args = ['--port', String(port), '--bind', nodeIp, '--protected-mode', 'no', '--dir', dir];
  const proc = await spawnDetached(bin, [...args, '--save', '', '--appendonly', 'no'], {
    cwd: dir,
    logFile: path.join(dir, 'redis.log'),
  });
  day.ownRedis = proc;
  await poll(
    `redis on ${nodeIp}:${port}`,
    async () => {
      const client = new Redis({ host: nodeIp, port, lazyConnect: true, maxRetriesPerRequest: 0 });
      try {
        await client.connect();
        return (await client.ping()) === 'PONG';
      } finally {
        client.disconnect();
      }
    },
    30_000,
  );
  log(`  own redis pid ${proc.pid} on ${nodeIp}:${port} (protected mode off)`);
  return `redis://${nodeIp}:${port}`;
}

/** The stack, started through its library with `host` (the node's address) and its own root. */
async function startStack(nodeIp: string): Promise<void> {
  const stack = await import('../../deploy/stack/index.ts');
  // The stack runs `src/cli/main.ts` and reads deploy/ from its root: a temporary root that links to them
  // keeps this instance's `.stack/` (state, data, logs) apart from the default test stack.
  for (const entry of ['src', 'deploy', 'schemas', 'node_modules', 'package.json']) {
    symlinkSync(path.join(REPO, entry), path.join(day.stackRoot, entry));
  }
  const customersFile = path.join(day.tmp, 'customers.json');
  writeFileSync(customersFile, JSON.stringify(CUSTOMERS, null, 2));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    METERLINE_STACK_HOST: nodeIp,
    METERLINE_CUSTOMERS: customersFile,
  };
  // Endpoints in the environment would be taken as external services: this instance starts its own.
  for (const k of [
    'KAFKA_BROKERS',
    'REDIS_URL',
    'AWS_ENDPOINT_URL_MARKETPLACE_METERING',
    'SCHEMA_REGISTRY_URL',
    'OTEL_EXPORTER_OTLP_ENDPOINT',
    'METERLINE_JAEGER_URL',
  ]) {
    delete env[k];
  }
  const redisStackArgs = readFileSync(path.join(REPO, 'deploy', 'stack', 'redis.ts'), 'utf8');
  if (/'--protected-mode',\s*'yes'/.test(redisStackArgs)) {
    // The stack's Redis keeps protected mode on, which refuses every client that is not on loopback (pods,
    // and even this machine's own address) while it has no password. Until the stack turns it off for a
    // non-loopback host, this test runs its own Redis on the node address and hands it over as external.
    env.REDIS_URL = await startOwnRedis(nodeIp);
  }
  const wanted = ['kafka', 'redis', 'emulator', 'jaeger'].filter((n) =>
    (stack.SERVICE_NAMES as readonly string[]).includes(n),
  ) as Parameters<typeof stack.ensureServices>[0];
  day.stackStarted = true; // from here on, teardown stops whatever this instance started
  const result = await stack.ensureServices(wanted, {
    root: day.stackRoot,
    host: nodeIp,
    env,
    log: (l: string) => log(`  stack ${l}`),
  });
  const e = result.env;
  day.kafkaBrokers = e.KAFKA_BROKERS;
  day.redisUrl = e.REDIS_URL;
  day.emulatorUrl = e.AWS_ENDPOINT_URL_MARKETPLACE_METERING;
  day.otlpEndpoint = e.OTEL_EXPORTER_OTLP_ENDPOINT;
  day.jaegerQuery = e.METERLINE_JAEGER_URL;
  log(`  stack endpoints: ${JSON.stringify(e)}`);
  const onNode = [day.kafkaBrokers, day.redisUrl, day.emulatorUrl, day.otlpEndpoint].every((v) =>
    v?.includes(nodeIp),
  );
  if (!onNode) {
    throw new Error(
      `the stack did not bind to the node address ${nodeIp} (endpoints ${JSON.stringify(e)}): pods cannot reach ` +
        '127.0.0.1 of this machine. deploy/stack needs its `host` option / METERLINE_STACK_HOST.',
    );
  }
}

/** Our node has the image in containerd; a given cluster has whatever METERLINE_TEST_IMAGE names. */
function testImage(): Record<string, string> {
  const given = day.cluster?.external ? process.env.METERLINE_TEST_IMAGE : undefined;
  if (!given) return { repository: 'localhost/meterline', tag: VERSION, pullPolicy: 'Never' };
  const at = given.lastIndexOf(':');
  const slash = given.lastIndexOf('/');
  return at > slash
    ? { repository: given.slice(0, at), tag: given.slice(at + 1), pullPolicy: 'IfNotPresent' }
    : { repository: given, tag: VERSION, pullPolicy: 'IfNotPresent' };
}

function helmValues(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    image: testImage(),
    kafka: { brokers: (day.kafkaBrokers as string).split(',') },
    redis: { url: day.redisUrl },
    aws: { region: 'us-east-1', meteringEndpoint: day.emulatorUrl },
    metering: { mode: 'saas', plan: PLAN, customers: CUSTOMERS },
    topics: { partitions: 3, create: { enabled: true } },
    // Hours close on idleness (every partition idle → the watermark follows the wall clock) within seconds.
    config: {
      logLevel: 'info',
      windowGrace: '1s',
      windowMaxDelay: '2m',
      maxOutOfOrderness: '1s',
      idleTimeout: '2s',
      commitInterval: '1s',
      sessionTimeout: '10s',
    },
    ...(day.otlpEndpoint ? { tracing: { otlpEndpoint: day.otlpEndpoint } } : {}),
    // One 2-core node: small requests so a rolling update fits.
    processor: {
      replicas: 1,
      resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { cpu: '1', memory: '1Gi' } },
      terminationGracePeriodSeconds: 30,
    },
    worker: {
      replicas: 1,
      resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
      terminationGracePeriodSeconds: 30,
    },
    registration: {
      enabled: true,
      replicas: 1,
      resources: { requests: { cpu: '50m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
      terminationGracePeriodSeconds: 30,
      redirectUrl: 'https://app.example.test/welcome',
      eventsApiKey: { existingSecret: 'meterline-events', key: 'api-key' },
      handoffSecret: { existingSecret: 'meterline-handoff', key: 'signing-secret' },
      // Reached from this machine through the node's kube-proxy, as a load balancer would.
      service: { type: 'NodePort' },
    },
    ...overrides,
  };
}

function postRenderer(): string {
  const file = path.join(day.tmp, 'post-render.sh');
  if (!existsSync(file)) {
    writeFileSync(
      file,
      `#!/bin/sh\nexec '${process.execPath}' '${path.join(REPO, 'test', 'cluster', 'post-render.ts')}'\n`,
    );
    chmodSync(file, 0o755);
  }
  return file;
}

async function helmDeploy(verb: 'install' | 'upgrade', values: Record<string, unknown>): Promise<void> {
  const file = path.join(day.tmp, `values-${verb}.json`);
  writeFileSync(file, JSON.stringify(values, null, 2));
  await helm(
    verb,
    RELEASE,
    path.join(REPO, 'helm', 'meterline'),
    '--namespace',
    NAMESPACE,
    ...(verb === 'install' ? ['--create-namespace'] : []),
    '-f',
    file,
    '--post-renderer',
    postRenderer(),
    '--wait',
    '--timeout',
    '10m',
  );
}

async function deploymentsReady(): Promise<string[]> {
  const out = await kubectl(
    'get',
    'deploy',
    '-n',
    NAMESPACE,
    '-l',
    `app.kubernetes.io/instance=${RELEASE}`,
    '-o',
    'json',
  );
  const list = JSON.parse(out) as {
    items: {
      metadata: { name: string };
      spec: { replicas: number };
      status: { readyReplicas?: number; updatedReplicas?: number };
    }[];
  };
  return list.items.map((d) => `${d.metadata.name} ${d.status.readyReplicas ?? 0}/${d.spec.replicas}`);
}

async function workerDeployment(): Promise<string> {
  const out = await kubectl(
    'get',
    'deploy',
    '-n',
    NAMESPACE,
    '-l',
    `app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=worker`,
    '-o',
    'jsonpath={.items[0].metadata.name}',
  );
  if (!out.trim()) throw new Error('no worker Deployment found');
  return out.trim();
}

/**
 * Where this machine reaches the registration Service: its node port on our own node (through kube-proxy,
 * as a load balancer would), or a `kubectl port-forward` on a cluster KUBECONFIG names.
 */
async function registrationUrl(): Promise<string> {
  const service = `${RELEASE}-registration`;
  if (!day.cluster?.external) {
    const port = await kubectl(
      '-n',
      NAMESPACE,
      'get',
      'svc',
      service,
      '-o',
      'jsonpath={.spec.ports[?(@.name=="http")].nodePort}',
    );
    return `http://${day.nodeIp}:${port.trim()}`;
  }
  const { spawn } = await import('node:child_process');
  const c = day.cluster;
  const child = spawn(
    c.kubectl,
    ['--kubeconfig', c.kubeconfig, '-n', NAMESPACE, 'port-forward', `service/${service}`, ':80'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  day.portForward = child;
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  const port = await poll(
    'kubectl port-forward',
    () => out.match(/127\.0\.0\.1:(\d+)/)?.[1],
    30_000,
    () => out,
  );
  return `http://127.0.0.1:${port}`;
}

async function produceBatch(events: RawEvent[], batchSize = 1000): Promise<void> {
  const t = Date.now();
  const sent = await produceMessages(events.map(eventMessage), {
    kafka: day.kafka as Kafka,
    topic: 'usage-events',
    batchSize,
  });
  log(`  produced ${sent} events (${new Set(events.map((e) => e.id)).size} distinct ids) in ${since(t)}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Jaeger

interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references?: { refType: string; traceID: string; spanID: string }[];
  tags?: { key: string; value: unknown }[];
  processID: string;
}
interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string }>;
}

async function jaegerTrace(traceId: string): Promise<JaegerTrace | undefined> {
  const res = await fetch(`${day.jaegerQuery}/api/traces/${traceId}`);
  if (res.status === 404) return undefined;
  if (!res.ok) throw new Error(`GET /api/traces/${traceId} answered ${res.status}`);
  const body = (await res.json()) as { data?: JaegerTrace[] };
  return body.data?.[0];
}

const tag = (s: JaegerSpan, key: string) => s.tags?.find((t) => t.key === key)?.value;

// ---------------------------------------------------------------------------------------------------------------

describe.skipIf(!ENABLED)('operator day on a single-node Kubernetes', () => {
  afterAll(async () => {
    if (!day.tornDown) await teardown().catch((err: Error) => log(`teardown failed: ${err.message}`));
  }, 600_000);

  it('1. cluster up → node Ready', async () => {
    await step('cluster up', async () => {
      day.tmp = mkdtempSync(path.join(os.tmpdir(), 'meterline-operator-day-'));
      day.stackRoot = path.join(day.tmp, 'stack-root');
      mkdirSync(day.stackRoot);
      day.cluster = await up({ log: (l) => log(`  cluster ${l}`) });
      const { primaryIPv4 } = await import('../../deploy/cluster/cluster.ts');
      day.nodeIp = process.env.METERLINE_STACK_HOST ?? day.cluster.nodeIp ?? primaryIPv4();
      const nodes = await kubectl('get', 'nodes', '-o', 'wide');
      log(`  ${nodes.trim().split('\n').join('\n  ')}`);
      expect(nodes).toMatch(/\sReady\s/);
      log('node Ready');
    });
  });

  it('2. image built, saved and imported', async () => {
    await step('image', async () => {
      if (day.cluster?.external) {
        const given = process.env.METERLINE_TEST_IMAGE;
        if (!given) {
          throw new Error(
            'KUBECONFIG names a cluster this test cannot import images into: build the image ' +
              '(deploy/image/build.sh --save meterline.tar), load it into that cluster (kind load image-archive ' +
              'meterline.tar, or push it to a registry), and name it in METERLINE_TEST_IMAGE',
          );
        }
        log(`image given: ${given} (METERLINE_TEST_IMAGE, loaded into the cluster beforehand)`);
        return;
      }
      const tar = path.join(day.tmp, 'meterline-image.tar');
      const t = Date.now();
      const out = await must(path.join(REPO, 'deploy', 'image', 'build.sh'), ['--save', tar]);
      log(`  ${out.trim().split('\n').slice(-4).join('\n  ')}`);
      log(`  build.sh took ${since(t)}`);
      const refs = await importImage(tar, { log: (l) => log(`  cluster ${l}`) });
      expect(refs.join(' ')).toContain(`localhost/meterline:${VERSION}`);
      rmSync(tar, { force: true });
      log('image imported');
    });
  });

  it('3. own stack on the node address (Kafka, Redis, emulator, Jaeger)', async () => {
    await step('stack', async () => {
      await startStack(day.nodeIp as string);
      day.kafka = createKafka({
        brokers: (day.kafkaBrokers as string).split(','),
        clientId: 'operator-day',
        logger: createLogger('operator-day', 'warn'),
      });
    });
  });

  it('4. helm install → every meterline pod Ready', async () => {
    await step('helm install', async () => {
      const { ensureTool } = await import('../../deploy/tools/tools.ts');
      day.helm = await ensureTool('helm', { log: (l) => log(`  tools ${l}`) });
      // The EventBridge key is a Secret the chart references, never a value: it must exist first.
      const ns = await run((day.cluster as ClusterInfo).kubectl, [
        '--kubeconfig',
        (day.cluster as ClusterInfo).kubeconfig,
        'create',
        'namespace',
        NAMESPACE,
      ]);
      if (ns.code !== 0 && !ns.out.includes('AlreadyExists')) throw new Error(ns.out);
      day.namespaceMade = true;
      await kubectl(
        '-n',
        NAMESPACE,
        'create',
        'secret',
        'generic',
        'meterline-events',
        `--from-literal=api-key=${EVENTS_API_KEY}`,
      );
      await kubectl(
        '-n',
        NAMESPACE,
        'create',
        'secret',
        'generic',
        'meterline-handoff',
        `--from-literal=signing-secret=${HANDOFF_SECRET}`,
      );
      try {
        await helmDeploy('install', helmValues());
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${await podSummary()}`);
      }
      day.installed = true;
      const ready = await deploymentsReady();
      log(`  ${ready.join(', ')}`);
      expect(ready.length).toBeGreaterThanOrEqual(3);
      expect(ready).toContain(`${RELEASE}-registration 1/1`);
      for (const line of ready) expect(line).toMatch(/ (\d+)\/\1$/);
      log('every meterline pod Ready');
    });
  });

  it('4b. helm test → each role ready, Kafka and Redis reachable from a pod of the image', async () => {
    await step('helm test', async () => {
      // The release is named like the chart, so its full name is the release's: the Pod <release>-test.
      const pod = `${RELEASE}-test`;
      try {
        const out = await helm('test', RELEASE, '--namespace', NAMESPACE, '--timeout', '5m');
        expect(out).toMatch(/Phase:\s+Succeeded/);
        log(`  ${pod}: ${out.match(/Phase:\s+\w+/)?.[0] ?? '?'}`);
      } catch (err) {
        // The Pod is kept when it fails (hook-delete-policy hook-succeeded): its lines say which check failed.
        const lines = await kubectl('logs', '-n', NAMESPACE, pod).catch(
          (e: Error) => `(no logs: ${e.message.split('\n')[0]})`,
        );
        // Teardown waits for the namespace to hold no pod: remove the failed test's Pod and policy.
        await kubectl('delete', '-n', NAMESPACE, 'pod,networkpolicy', pod, '--ignore-not-found').catch(
          () => '',
        );
        throw new Error(`${(err as Error).message}\n${lines}\n${await podSummary()}`);
      }
      log('helm test passed');
    });
  });

  it('5. a buyer registers through the registration Service → the tenant is in the directory', async () => {
    await step('registration', async () => {
      day.registrationUrl = await registrationUrl();
      const [tenant, identity] = Object.entries(REGISTERED)[0] as [string, Customer];
      const minted = await fetch(`${day.emulatorUrl}/_emulator/registration-tokens`, {
        method: 'POST',
        body: JSON.stringify({ productCode: PLAN.productCode, ...identity }),
      });
      expect(minted.status).toBe(200);
      const { token } = (await minted.json()) as { token: string };
      const register = (t: string) =>
        fetch(`${day.registrationUrl}/marketplace/register`, {
          method: 'POST',
          redirect: 'manual',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ 'x-amzn-marketplace-token': t }),
        });
      // kube-proxy may need a moment to program a new node port.
      const res = await poll(
        'the registration Service to answer',
        async () => register(token).catch(() => undefined),
        60_000,
      );
      expect(res.status).toBe(303);
      // The onboarding page gets a signed hand-off, verified with the key from the Secret, and no bare ids.
      const location = new URL(res.headers.get('location') ?? '');
      expect(`${location.origin}${location.pathname}`).toBe('https://app.example.test/welcome');
      expect([...location.searchParams.keys()]).toEqual([HANDOFF_QUERY_PARAM]);
      const claims = verifyHandoff(location.searchParams.get(HANDOFF_QUERY_PARAM) ?? '', HANDOFF_SECRET);
      expect(claims).toMatchObject({ tenant, productCode: PLAN.productCode, ...identity });
      expect((await register('made-up-token')).status).toBe(400);
      expect((await snapshot()).calls.ResolveCustomer).toBe(2);
      const redis = new Redis(day.redisUrl as string);
      try {
        // Read through the directory's own API: its storage is keyed by product and buyer since 76a1e88.
        const scripted = createRedis(day.redisUrl as string);
        const entry =
          (
            await new CustomerDirectory(scripted, new Keys('meterline'))
              .get([tenant])
              .finally(() => scripted.disconnect())
          ).get(tenant) ?? {};
        expect(entry).toMatchObject({
          tenant,
          ...identity,
          productCode: PLAN.productCode,
          status: 'subscribed',
        });
      } finally {
        redis.disconnect();
      }
      log(
        `  buyer ${tenant} registered through ${day.registrationUrl}/marketplace/register (303 to the onboarding page)`,
      );
      log('registration stored');
    });
  });

  it('6. events from outside → the emulator accepts exactly their sums', async () => {
    await step('first batch', async () => {
      // The producer spans (first link of the trace) go to Jaeger too: start the SDK in this process.
      if (day.otlpEndpoint && existsSync(path.join(REPO, 'src', 'observability', 'otel-preload.ts'))) {
        process.env.OTEL_EXPORTER_OTLP_ENDPOINT = day.otlpEndpoint;
        process.env.OTEL_SERVICE_NAME = 'operator-day-producer';
        await import('../../src/observability/otel-preload.ts');
        const { tracingActive } = await import('../../src/observability/tracing.ts');
        day.traceProducer = tracingActive();
      }
      const batch1 = [
        ...syntheticEvents({
          count: 600,
          // The registered buyer's usage is billed from the directory: it is in no customers file.
          customers: [...TENANTS, ...Object.keys(REGISTERED)],
          dimensions: ['api_calls', 'jobs'],
          hours: 1,
          nowMs: day.hour1 + HOUR_MS,
          duplicateRate: 0.05,
          seed: 11,
          idPrefix: 'day1',
        }),
      ];
      day.batch1 = batch1;
      await produceBatch(batch1);
      if (day.traceProducer) {
        const { shutdownTracing } = await import('../../src/observability/tracing.ts');
        await shutdownTracing(); // flushes the producer spans
      }
      const expected = expectedSums(batch1);
      const hours = new Set([hourIso(day.hour1)]);
      const { snap, got } = await waitAccepted(expected, hours, 10 * 60_000);
      log(`  accepted ${got.size} records for ${hourIso(day.hour1)}; emulator duplicates ${snap.duplicates}`);
      expect(got).toEqual(expected);
      expect(snap.duplicates).toBe(0);
      for (const [k, n] of recordCounts(snap.records)) expect(n, k).toBe(1);
      log(`first batch: ${expected.size} records, totals exact`);
      // The buyer leaves: EventBridge's API destination posts the event through the same Service.
      const [tenant] = Object.keys(REGISTERED) as [string];
      const left = await fetch(`${day.registrationUrl}/marketplace/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-meterline-api-key': EVENTS_API_KEY },
        body: JSON.stringify({
          source: 'aws.agreement-marketplace',
          'detail-type': 'License Deprovisioned - Manager',
          time: new Date().toISOString(),
          detail: { license: { arn: REGISTERED[tenant]?.licenseArn }, product: { code: PLAN.productCode } },
        }),
      });
      expect([left.status, (await left.text()).trim()]).toEqual([200, 'applied']);
      const redis = new Redis(day.redisUrl as string);
      try {
        const scripted = createRedis(day.redisUrl as string);
        const entry = (
          await new CustomerDirectory(scripted, new Keys('meterline'))
            .get([tenant])
            .finally(() => scripted.disconnect())
        ).get(tenant);
        expect(entry?.status).toBe('unsubscribed');
      } finally {
        redis.disconnect();
      }
      log(`  lifecycle: License Deprovisioned through the Service → ${tenant} unsubscribed`);
    });
  });

  it('7. the submission trace in Jaeger, from the AWS call back to the producer span', async () => {
    await step(
      'trace',
      async () => {
        if (!day.jaegerQuery)
          throw new Error('no Jaeger query endpoint (stack without Jaeger and none built)');
        const kafka = day.kafka as Kafka;
        const messages = await readAllMessages(kafka, 'metering-submissions');
        const records = messages.map(
          (m) => JSON.parse(String(m.value)) as { recordId: string; hour: string; traceparent?: string },
        );
        const mine = records.filter((r) => r.hour === hourIso(day.hour1));
        expect(mine.length, 'submission records for the first hour').toBeGreaterThan(0);
        const withTrace = mine.filter((r) => r.traceparent);
        if (!withTrace.length) {
          throw new Error(
            `none of the ${mine.length} submission records carries a traceparent: tracing is not on in the ` +
              'deployed image/chart yet (the processor must run with the OpenTelemetry preload and OTLP endpoint)',
          );
        }
        const record = withTrace[0] as { recordId: string; traceparent: string };
        const traceId = record.traceparent.split('-')[1] as string;
        log(`  record ${record.recordId} → trace ${traceId}`);
        const trace = await poll(
          `trace ${traceId} with the AWS call span`,
          async () => {
            const t = await jaegerTrace(traceId);
            return t?.spans.some(
              (s) => tag(s, 'rpc.method') === 'BatchMeterUsage' || /BatchMeterUsage/.test(s.operationName),
            )
              ? t
              : undefined;
          },
          120_000,
          async () => {
            const t = await jaegerTrace(traceId).catch(() => undefined);
            return `spans so far: ${t?.spans.map((s) => `${t.processes[s.processID]?.serviceName}:${s.operationName}`).join(', ') ?? 'none'}`;
          },
          2000,
        );
        const services = new Set(trace.spans.map((s) => trace.processes[s.processID]?.serviceName));
        log(`  trace ${traceId}: ${trace.spans.length} spans from ${[...services].join(', ')}`);
        for (const s of trace.spans) {
          log(
            `    ${trace.processes[s.processID]?.serviceName} ${s.operationName}${s.references?.length ? ` (refs ${s.references.length})` : ''}`,
          );
        }
        // Walk the links (FOLLOWS_FROM references into other traces) back to a producer span.
        const seen = new Set([traceId]);
        let frontier = [trace];
        let producer: { span: JaegerSpan; service: string } | undefined;
        for (let depth = 0; depth < 4 && !producer && frontier.length; depth++) {
          const next: JaegerTrace[] = [];
          for (const t of frontier) {
            for (const s of t.spans) {
              if (
                tag(s, 'span.kind') === 'producer' &&
                tag(s, 'messaging.destination.name') === 'usage-events'
              ) {
                producer = { span: s, service: t.processes[s.processID]?.serviceName ?? '?' };
              }
              for (const r of s.references ?? []) {
                if (seen.has(r.traceID)) continue;
                seen.add(r.traceID);
                const linked = await poll(
                  `linked trace ${r.traceID}`,
                  () => jaegerTrace(r.traceID),
                  60_000,
                ).catch(() => undefined);
                if (linked) next.push(linked);
              }
            }
          }
          frontier = next;
        }
        if (!producer) {
          throw new Error(
            `no producer span (send usage-events) reachable from trace ${traceId} through its links` +
              (day.traceProducer ? '' : ' (this process could not start the OpenTelemetry SDK)'),
          );
        }
        log(
          `  producer span ${producer.span.spanID} (${producer.service}, event ${String(tag(producer.span, 'meterline.event_id'))}) → … → BatchMeterUsage`,
        );
        log('trace found: producer span → AWS call span');
      },
      false,
    );
  });

  it('8. helm upgrade, then a rolling restart of the worker during a second batch: each record once', async () => {
    await step('upgrade and restart', async () => {
      const values = helmValues();
      (values.worker as Record<string, unknown>).replicas = 2;
      (values.config as Record<string, unknown>).logLevel = 'debug';
      const t = Date.now();
      await helmDeploy('upgrade', values);
      const worker = await workerDeployment();
      await kubectl('rollout', 'status', `deployment/${worker}`, '-n', NAMESPACE, '--timeout=10m');
      const ready = await deploymentsReady();
      log(`  upgraded in ${since(t)}: ${ready.join(', ')}`);
      expect(ready.find((l) => l.startsWith(worker))).toBe(`${worker} 2/2`);
      const cm = await kubectl(
        'get',
        'configmap',
        '-n',
        NAMESPACE,
        '-o',
        'jsonpath={.items[*].data.LOG_LEVEL}',
      );
      expect(cm).toContain('debug');

      // Batch 2: 24 tenants in two hours never finalized before (the first batch's hour is: late events for
      // it would be carried into the open hour). All of it in one send, so each partition gets an hour's
      // events in one fetch: the hours are past their close boundary and close at the next punctuation.
      const batch2 = [
        ...syntheticEvents({
          count: 1500,
          customers: ALL_TENANTS,
          dimensions: ['api_calls', 'jobs'],
          hours: 2,
          nowMs: day.hour2 + HOUR_MS,
          duplicateRate: 0.05,
          seed: 23,
          idPrefix: 'day2',
        }),
      ];
      day.batch2 = batch2;
      // A slow, flaky AWS (1 call per second, 2–3 s each, throttles and unprocessed records) keeps the worker
      // submitting while it restarts.
      const faults = {
        tps: 1,
        latencyMs: 2000,
        latencyJitterMs: 1000,
        throttleRate: 0.2,
        unprocessedRate: 0.2,
        seed: 5,
      };
      const set = await fetch(`${day.emulatorUrl}/_emulator/faults`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(faults),
      });
      expect(set.status).toBe(200);
      log(`  emulator faults: ${JSON.stringify(faults)}`);
      const expected2 = expectedSums(batch2);
      const hours2 = new Set([hourIso(day.hour2), hourIso(day.hour2 - HOUR_MS)]);
      await produceBatch(batch2, batch2.length);
      await poll(
        'the first record of the second batch at AWS',
        async () => acceptedSums((await snapshot()).records, hours2).size > 0,
        120_000,
      );
      const restart = Date.now();
      await kubectl('rollout', 'restart', `deployment/${worker}`, '-n', NAMESPACE);
      const atStart = acceptedSums((await snapshot()).records, hours2).size;
      log(
        `  worker rolling restart started with ${atStart} of ${expected2.size} records of the second batch at AWS`,
      );
      await kubectl('rollout', 'status', `deployment/${worker}`, '-n', NAMESPACE, '--timeout=10m');
      const atEnd = acceptedSums((await snapshot()).records, hours2).size;
      log(
        `  worker restarted in ${since(restart)} (${(await deploymentsReady()).join(', ')}); ${atEnd} of ${expected2.size} records at AWS then`,
      );
      if (atStart >= expected2.size) log('  note: the submission had finished before the restart began');

      const expected = new Map([...expectedSums(day.batch1 ?? []), ...expectedSums(batch2)]);
      const hours = new Set([hourIso(day.hour1), ...hours2]);
      const { snap, got } = await waitAccepted(expected, hours, 10 * 60_000);
      await fetch(`${day.emulatorUrl}/_emulator/faults`, {
        method: 'POST',
        body: JSON.stringify({
          ...faults,
          tps: 10,
          latencyMs: 0,
          latencyJitterMs: 0,
          throttleRate: 0,
          unprocessedRate: 0,
        }),
      });
      // settle: nothing more may arrive (a duplicate would show up as a second record or in `duplicates`)
      await sleep(10_000);
      const final = await snapshot();
      log(
        `  accepted ${got.size} records for ${[...hours].join(', ')}; duplicates ${final.duplicates}; calls ${JSON.stringify(final.calls)}`,
      );
      expect(acceptedSums(final.records, hours)).toEqual(expected);
      expect(final.duplicates).toBe(0);
      expect(final.records.length).toBe(snap.records.length);
      for (const [k, n] of recordCounts(final.records)) expect(n, k).toBe(1);
      log(
        `second batch: every record accepted once (${expected.size} records over three hours), duplicates 0`,
      );
    });
  });

  it('9. teardown: helm uninstall, stack stop, cluster down, nothing left', async () => {
    const t = Date.now();
    log('── teardown');
    await teardown();
    log(`── teardown: ok in ${since(t)}`);
    log('clean teardown');
  });
});

async function teardown(): Promise<void> {
  day.tornDown = true;
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
      log(`  ${what} FAILED: ${(err as Error).message.split('\n')[0]}`);
    }
  };
  day.portForward?.kill();
  if (!day.installed && day.namespaceMade && day.cluster) {
    await attempt('namespace delete', async () => {
      await kubectl('delete', 'namespace', NAMESPACE, '--wait=true', '--timeout=120s');
    });
  }
  if (day.installed && day.cluster) {
    await attempt('helm uninstall', async () => {
      await helm('uninstall', RELEASE, '--namespace', NAMESPACE, '--wait', '--timeout', '5m');
      await poll(
        'no meterline pods',
        async () => (await kubectl('get', 'pods', '-n', NAMESPACE, '-o', 'name')).trim() === '',
        180_000,
      );
      await kubectl('delete', 'namespace', NAMESPACE, '--wait=true', '--timeout=120s');
      log('  helm uninstall: release and namespace gone');
    });
  }
  if (day.ownRedis) {
    const r = day.ownRedis;
    await attempt('redis stop', async () => {
      const { isAlive, stopProcess } = await import('../../deploy/stack/proc.ts');
      await stopProcess(r.pid, r.startTime, 20_000);
      if (isAlive(r.pid, r.startTime)) throw new Error(`redis pid ${r.pid} still runs`);
      log('  own redis stopped');
    });
  }
  if (day.stackStarted) {
    await attempt('stack stop', async () => {
      const stack = await import('../../deploy/stack/index.ts');
      await stack.stopStack({ root: day.stackRoot, log: (l) => log(`  stack ${l}`) });
      const left = (await stack.stackStatus({ root: day.stackRoot, probe: false })).filter((s) => s.alive);
      if (left.length)
        throw new Error(`still running: ${left.map((s) => `${s.name} pid ${s.record?.pid}`).join(', ')}`);
      log('  stack stopped: no process left');
    });
  }
  if (day.cluster) {
    await attempt('cluster down', () => down({ log: (l) => log(`  cluster ${l}`) }));
  }
  if (day.tmp) rmSync(day.tmp, { recursive: true, force: true });
  if (problems.length) throw new Error(`teardown problems:\n${problems.join('\n')}`);
}
