/**
 * Runtime configuration: environment variables, optionally layered over a file (METERLINE_CONFIG, JSON or
 * YAML, with the same keys). The environment wins. Validated once at start-up; every violation is listed
 * with its key.
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { type KafkaSecurity, kafkaSecurityFromEnv } from '../kafka/security.ts';
import { DEFAULT_ACCEPTANCE_WINDOW_MS, type MeteringApi } from '../metering/aws-window.ts';
import { type ConsoleSettings, consoleSettings } from './console.ts';
import { type CustomerMap, type Customers, customersObject, loadCustomers } from './customers.ts';
import { lacksUnit, parseDuration } from './duration.ts';
import { readStructuredFile } from './load-file.ts';
import { loadPlan, type Plan } from './plan.ts';

/** HS256 keys shorter than the hash (32 bytes) weaken it (RFC 7518 §3.2): the hand-off token's key. */
const MIN_SECRET_BYTES = 32;

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined && lacksUnit(text)) {
        ctx.addIssue({ code: 'custom', message: `needs a unit, like 300ms, 30s, 5m or 2h (got "${text}")` });
        return z.NEVER;
      }
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `must be a duration like 30s, 5m or 2h (got "${text}")` });
        return z.NEVER;
      }
      return ms;
    });

const int = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const topic = (fallback: string) =>
  z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,249}$/, 'must be a valid Kafka topic name')
    .default(fallback);

/** Every key this process reads, with its default. docs/configuration.md mirrors it (test/docs/configuration.test.ts). */
export const EnvSchema = z.object({
  // Required by the processor and the worker (checked per role below); registration needs no Kafka.
  KAFKA_BROKERS: z.string().optional(),
  KAFKA_CLIENT_ID: z.string().default('meterline'),
  // TLS and SASL (checked, and turned into client options, by src/kafka/security.ts).
  KAFKA_SSL: z.enum(['true', 'false']).optional(),
  KAFKA_SSL_CA_FILE: z.string().optional(),
  KAFKA_SSL_REJECT_UNAUTHORIZED: z.enum(['true', 'false']).optional(),
  KAFKA_SASL_MECHANISM: z.string().optional(),
  KAFKA_SASL_USERNAME: z.string().optional(),
  KAFKA_SASL_PASSWORD: z.string().optional(),
  // A private CA for rediss:// (TLS is on with a rediss:// URL).
  REDIS_TLS_CA_FILE: z.string().optional(),
  REDIS_URL: z
    .string({ error: 'required: redis://[user:password@]host:port[/db]' })
    .regex(
      /^rediss?:\/\/[^,]*(,\s*rediss?:\/\/[^,]*)*$/,
      'must be a redis:// or rediss:// URL (cluster: a comma-separated list of them)',
    ),
  // Redis Cluster: REDIS_URL may then list several seed nodes, `redis://h1:p1,redis://h2:p2`.
  REDIS_CLUSTER: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  SCHEMA_REGISTRY_URL: z.url().optional(),
  AWS_REGION: z.string().optional(),
  AWS_ENDPOINT_URL_MARKETPLACE_METERING: z.url().optional(),
  // The SDK's own name for the Entitlement Service's endpoint override (GetEntitlements).
  AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: z.url().optional(),
  METERLINE_PLAN: z
    .string({ error: 'required: path of the metering plan (JSON or YAML)' })
    .min(1, 'required: path of the metering plan (JSON or YAML)'),
  METERLINE_CUSTOMERS: z.string().optional(),
  METERLINE_TOPIC_USAGE: topic('usage-events'),
  METERLINE_TOPIC_SUBMISSIONS: topic('metering-submissions'),
  METERLINE_TOPIC_FAILED: topic('metering-failed'),
  // Compacted: the frozen hours and metering-model state the processor rebuilds Redis from after a loss.
  METERLINE_TOPIC_CHANGELOG: topic('meterline-window-changelog'),
  // The console's audit log: who redrove what (a Kafka topic: it outlives a Redis loss, see src/console/audit.ts).
  METERLINE_TOPIC_AUDIT: topic('meterline-console-audit'),
  METERLINE_TOPIC_PARTITIONS: int(6, 1, 1000),
  // The processor refuses a usage topic that keeps less than a replay after a Redis loss needs
  // (src/kafka/usage-retention.ts); true starts it anyway, accepting that such a replay may lose usage.
  METERLINE_ALLOW_SHORT_RETENTION: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  METERLINE_REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits and _ . : - only')
    .default('meterline'),
  METERLINE_PROCESSOR_GROUP: z.string().min(1).default('meterline-processor'),
  METERLINE_WORKER_GROUP: z.string().min(1).default('meterline-worker'),
  METERLINE_SESSION_TIMEOUT: duration('30s'),
  // A Redis reply lost on a silent network path would otherwise hang the stage for ever (min 100ms: 0 would
  // turn the timeout off).
  METERLINE_REDIS_COMMAND_TIMEOUT: duration('5s'),
  METERLINE_PROCESSOR_CONCURRENCY: int(3, 1, 64),
  METERLINE_WINDOW_GRACE: duration('5m'),
  METERLINE_WINDOW_MAX_DELAY: duration('3h'),
  METERLINE_MAX_OUT_OF_ORDERNESS: duration('1m'),
  METERLINE_IDLE_TIMEOUT: duration('1m'),
  METERLINE_LATE_POLICY: z.enum(['carry-forward', 'dead-letter']).default('carry-forward'),
  METERLINE_COMMIT_INTERVAL: duration('5s'),
  METERLINE_MAX_FUTURE_SKEW: duration('5m'),
  METERLINE_SUBMIT_MARGIN: duration('1h'),
  METERLINE_MAX_MESSAGE_BYTES: int(16_384, 256, 1_048_576),
  // saas: BatchMeterUsage for the buyers in the customers file or the registered ones; container: MeterUsage from the buyer's account.
  METERLINE_METERING_MODE: z.enum(['saas', 'container']).default('saas'),
  // Unset: a port per role (DEFAULT_OPS_PORT), so a processor and a worker on one host both start.
  METERLINE_OPS_PORT: z
    .string()
    .optional()
    .refine(
      (v) => v === undefined || v === 'off' || (/^\d+$/.test(v) && Number(v) <= 65_535),
      'a port (0 = any free one) or "off"',
    ),
  // A Kafka send not done by then fails (bounded retries included): its stage keeps the input and retries,
  // and /readyz fails until a send succeeds.
  METERLINE_PRODUCE_TIMEOUT: duration('10s'),
  // Sends failing this long without a success fail /healthz too, so Kubernetes restarts the pod.
  METERLINE_PRODUCE_UNHEALTHY_AFTER: duration('5m'),
  // A call AWS has not answered by then is retried (the record's id makes the resend safe).
  METERLINE_AWS_REQUEST_TIMEOUT: duration('10s'),
  METERLINE_RATE_LIMIT: z.coerce
    .number({ error: 'must be a number of requests per second' })
    .positive()
    .max(1000)
    .default(10),
  // Registration: the buyer-facing HTTP port, where the buyer goes next, and who may send lifecycle events.
  METERLINE_REGISTRATION_LISTEN_PORT: int(8080, 0, 65_535),
  // Registration POSTs per minute, shared by every replica through Redis: from one client address (a
  // buyer needs one or two; a retry or a colleague behind the same NAT a few more), and from everyone (a
  // seller's launch-day burst, well under ResolveCustomer's quota).
  METERLINE_REGISTRATION_RATE_PER_ADDRESS: int(10, 1, 10_000),
  METERLINE_REGISTRATION_RATE_TOTAL: int(600, 1, 1_000_000),
  // How many proxies in front of the service append to X-Forwarded-For (an ingress: 1). 0: the header is
  // ignored and the socket's address is the client, since anyone can send the header.
  METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS: int(0, 0, 10),
  METERLINE_REGISTRATION_REDIRECT_URL: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .optional(),
  // Unset: AWS Marketplace's own topics for the plan's products; '*' (alone) takes any topic, on purpose.
  METERLINE_SNS_TOPIC_ARNS: z
    .string()
    .regex(
      /^(\*|arn:aws[a-z-]*:sns:[^,*]+(,arn:aws[a-z-]*:sns:[^,*]+)*)$/,
      "comma-separated SNS topic ARNs, or '*' alone for any topic",
    )
    .optional(),
  METERLINE_EVENTS_API_KEY: z.string().min(24, 'at least 24 characters').optional(),
  // The seller's backend sends this key to POST /marketplace/link; unset, the endpoint refuses every call.
  METERLINE_LINK_API_KEY: z.string().min(24, 'at least 24 characters').optional(),
  // Registration: how often every contract buyer's entitlements are fetched again (GetEntitlements), on
  // top of registration and entitlement events; a safety net for a missed event (checked below).
  METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: duration('1h'),
  // HS256 key of the hand-off token to the onboarding page (src/subscribe/handoff.ts); checked below.
  METERLINE_HANDOFF_SIGNING_SECRET: z.string().optional(),
  // The console (`meterline console`): its port, and who signs in (checked in ./console.ts).
  METERLINE_CONSOLE_PORT: z.string().optional(),
  // Jaeger's query API, for the console's record pages (and `meterline trace`, which also takes --jaeger).
  METERLINE_JAEGER_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  METERLINE_CONSOLE_TOKENS: z.string().optional(),
  METERLINE_CONSOLE_IDENTITY_HEADER: z.string().optional(),
  METERLINE_CONSOLE_OPERATORS: z.string().optional(),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

export type Env = z.output<typeof EnvSchema>;
/**
 * `directory`: tools that read only the customer directory in Redis (no Kafka, no AWS); `handoff`: the
 * hand-off verifier (the signing secret and Redis for its nonces).
 */
export type Role = 'processor' | 'worker' | 'registration' | 'directory' | 'handoff' | 'console';
const WITHOUT_KAFKA: ReadonlySet<Role> = new Set(['registration', 'directory', 'handoff']);

export interface Config {
  env: Env;
  kafka: { brokers: string[]; clientId: string; security: KafkaSecurity };
  redis: { url: string; prefix: string; cluster: boolean; tlsCaFile?: string; commandTimeoutMs: number };
  /** Confluent-compatible schema registry for Avro events; JSON only without it. */
  schemaRegistryUrl: string | undefined;
  topics: {
    usage: string;
    submissions: string;
    failed: string;
    changelog: string;
    audit: string;
    partitions: number;
  };
  /** `meterline console`: checked only for that role. */
  console: ConsoleSettings;
  /** Start the processor even if the usage topic keeps less than a replay needs. */
  allowShortUsageRetention: boolean;
  plan: Plan;
  /** Tenant → AWS identity, from the customers file. */
  customerMap: CustomerMap;
  /** The same, as a null-prototype object, for code that still indexes it. */
  customers: Customers;
  window: {
    graceMs: number;
    maxDelayMs: number;
    maxOutOfOrdernessMs: number;
    idleTimeoutMs: number;
    latePolicy: 'carry-forward' | 'dead-letter';
    commitIntervalMs: number;
    maxFutureSkewMs: number;
    submitMarginMs: number;
  };
  groups: { processor: string; worker: string; sessionTimeoutMs: number; concurrency: number };
  maxMessageBytes: number;
  /** Kafka sends: the deadline of one, and how long failing ones may last before /healthz fails. */
  produce: { timeoutMs: number; unhealthyAfterMs: number };
  worker: {
    region: string | undefined;
    endpoint: string | undefined;
    mode: 'saas' | 'container';
    /** The AWS API the records go to, from the mode. */
    api: MeteringApi;
    /** Calls per second for the whole fleet of workers. */
    rateLimit: number;
    requestTimeoutMs: number;
  };
  registration: {
    port: number;
    /** Registration POSTs per minute from one client address, and from all; shared through Redis. */
    ratePerAddress: number;
    rateTotal: number;
    /** Proxies whose X-Forwarded-For entries are trusted; 0: the socket's address. */
    trustedProxyHops: number;
    redirectUrl: string | undefined;
    /** Empty: AWS Marketplace's topics for the plan's products; '*': any topic. */
    snsTopicArns: string[] | '*';
    eventsApiKey: string | undefined;
    linkApiKey: string | undefined;
    /** Signs the hand-off token on the redirect; required with a redirect URL. */
    handoffSecret: string | undefined;
  };
  /** GetEntitlements (registration): the endpoint override and the scheduled refresh. */
  entitlements: { endpoint: string | undefined; refreshIntervalMs: number };
  logLevel: Env['LOG_LEVEL'];
  /** Port of /metrics, /healthz and /readyz; undefined when off. */
  opsPort: number | undefined;
  /** Things worth telling the operator that do not stop the start (unknown METERLINE_* variables). */
  warnings: string[];
}

/**
 * The ops port of each role when METERLINE_OPS_PORT is unset: a processor (or `run`) and a worker started
 * side by side on one host must not collide. The chart sets METERLINE_OPS_PORT itself.
 */
export const DEFAULT_OPS_PORT = { processor: 9464, worker: 9465, registration: 9466, console: 9467 } as const;

function defaultOpsPort(roles: readonly Role[]): number {
  if (roles.includes('processor')) return DEFAULT_OPS_PORT.processor;
  if (roles.includes('worker')) return DEFAULT_OPS_PORT.worker;
  if (roles.includes('console')) return DEFAULT_OPS_PORT.console;
  return DEFAULT_OPS_PORT.registration;
}

/**
 * METERLINE_* variables read outside the configuration: by the CLI's tools, the local stack, the tests and
 * the chart (METERLINE_REDIS_PASSWORD is interpolated into REDIS_URL by Kubernetes). Never warned about.
 */
export const OTHER_METERLINE_VARIABLES: ReadonlySet<string> = new Set([
  'METERLINE_CONFIG',
  'METERLINE_REDIS_PASSWORD',
  'METERLINE_TRACING',
  'METERLINE_STACK_HOST',
  'METERLINE_JAVA',
  'METERLINE_NODE_IP',
  'METERLINE_KEEP_STACK',
  'METERLINE_NO_STACK',
  'METERLINE_TESTCONTAINERS',
  'METERLINE_TESTCONTAINERS_IMAGES',
  'METERLINE_FAULT_TESTS',
  'METERLINE_CLUSTER_TEST',
  'METERLINE_TEST_IMAGE',
  'METERLINE_TEST_KILL_AT',
]);

/** One warning per METERLINE_* variable nothing reads, with the closest known name when one is close. */
export function unknownVariableWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = [...KEYS.filter((k) => k.startsWith('METERLINE_')), ...OTHER_METERLINE_VARIABLES];
  return Object.keys(env)
    .filter((k) => k.startsWith('METERLINE_') && !known.includes(k))
    .sort()
    .map((k) => {
      const [best] = known
        .map((name) => ({ name, d: editDistance(k, name) }))
        .sort((a, b) => a.d - b.d || (a.name < b.name ? -1 : 1));
      const close = best && best.d <= Math.max(2, Math.floor(k.length / 5));
      return `${k} is not a meterline setting${close ? ` (did you mean ${best.name}?)` : ''}`;
    });
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        (row[j] ?? 0) + 1,
        (next[j - 1] ?? 0) + 1,
        (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/** Each entry host:port (IPv6 as [addr]:port); kafkajs would otherwise loop on "Port should be >= 0". */
export function brokerIssues(brokers: string): string[] {
  return brokers
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean)
    .flatMap((b) => {
      const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(b);
      if (m && Number(m[2]) >= 1 && Number(m[2]) <= 65_535) return [];
      const host = m?.[1] ?? b.replace(/:[^:\]]*$/, '');
      return [`KAFKA_BROKERS: "${b}" has no port: write host:port, such as ${host}:9092`];
    });
}

const KEYS = Object.keys(EnvSchema.shape) as (keyof Env)[];

/** Merges the optional config file under the environment, keeping only known keys. */
function collectSource(env: NodeJS.ProcessEnv): Record<string, string> {
  const merged: Record<string, string> = {};
  const file = env.METERLINE_CONFIG;
  if (file) {
    const raw = readStructuredFile(file, `config file (METERLINE_CONFIG=${file})`);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new ConfigError(`config file ${file}`, ['must be a map of configuration keys']);
    }
    const unknown = Object.keys(raw).filter((k) => !KEYS.includes(k as keyof Env));
    if (unknown.length) {
      throw new ConfigError(
        `config file ${file}`,
        unknown.map((k) => `${k}: unknown key`),
      );
    }
    for (const [k, v] of Object.entries(raw)) if (v !== null && v !== undefined) merged[k] = String(v);
  }
  for (const k of KEYS) {
    const v = env[k];
    if (v !== undefined && v !== '') merged[k] = v;
  }
  return merged;
}

export function loadConfig(roles: readonly Role[], env: NodeJS.ProcessEnv = process.env): Config {
  const source = collectSource(env);
  const parsed = EnvSchema.safeParse(source);
  const issues: string[] = parsed.success
    ? []
    : parsed.error.issues.map((i) => `${String(i.path[0] ?? '(env)')}: ${i.message}`);
  const e = parsed.data;
  // Every role but registration (and Redis-only tools) talks to Kafka; so do tools with no role (status, dlq).
  const needsKafka = roles.length === 0 || roles.some((r) => !WITHOUT_KAFKA.has(r));
  if (needsKafka && !source.KAFKA_BROKERS)
    issues.push('KAFKA_BROKERS: required: comma-separated host:port list');
  if (source.KAFKA_BROKERS) issues.push(...brokerIssues(source.KAFKA_BROKERS));
  if (roles.includes('worker') && !source.AWS_REGION)
    issues.push('AWS_REGION: required by the metering worker');
  if (roles.includes('registration') && !source.AWS_REGION)
    issues.push('AWS_REGION: required by registration (it calls ResolveCustomer)');
  // Without a signed token the onboarding page could only get bare ids, which anyone can type.
  const handoffSecret = source.METERLINE_HANDOFF_SIGNING_SECRET;
  if (handoffSecret !== undefined && Buffer.byteLength(handoffSecret) < MIN_SECRET_BYTES)
    issues.push(`METERLINE_HANDOFF_SIGNING_SECRET: at least ${MIN_SECRET_BYTES} bytes (an HS256 key)`);
  else if (handoffSecret === undefined && roles.includes('handoff'))
    issues.push('METERLINE_HANDOFF_SIGNING_SECRET: required to verify hand-off tokens');
  else if (
    handoffSecret === undefined &&
    roles.includes('registration') &&
    source.METERLINE_REGISTRATION_REDIRECT_URL
  )
    issues.push(
      'METERLINE_HANDOFF_SIGNING_SECRET: required with METERLINE_REGISTRATION_REDIRECT_URL (it signs the hand-off token)',
    );
  // A link spends a hand-off token: it needs the key that signs them.
  if (
    source.METERLINE_LINK_API_KEY !== undefined &&
    handoffSecret === undefined &&
    roles.includes('registration')
  )
    issues.push(
      'METERLINE_HANDOFF_SIGNING_SECRET: required with METERLINE_LINK_API_KEY (links verify hand-off tokens)',
    );
  const consoleSetup = consoleSettings(source);
  if (roles.includes('console')) issues.push(...consoleSetup.issues);
  const container = source.METERLINE_METERING_MODE === 'container';
  const kafkaSecurity = kafkaSecurityFromEnv(source as NodeJS.ProcessEnv);
  issues.push(...kafkaSecurity.issues);
  if (source.REDIS_TLS_CA_FILE && !existsSync(source.REDIS_TLS_CA_FILE))
    issues.push(`REDIS_TLS_CA_FILE: ${source.REDIS_TLS_CA_FILE} does not exist`);
  if (e && !e.REDIS_CLUSTER && e.REDIS_URL.includes(',')) {
    issues.push('REDIS_URL: a list of seed URLs needs REDIS_CLUSTER=true');
  }
  // 0 would silently mean no timeout at all (a lost reply stalls the stage for ever); less than 100ms would
  // fail healthy commands.
  if (e && e.METERLINE_REDIS_COMMAND_TIMEOUT < 100) {
    issues.push('METERLINE_REDIS_COMMAND_TIMEOUT: must be at least 100ms (0 would turn the timeout off)');
  }
  // Windows must close early enough to leave the worker room to retry inside AWS's acceptance window.
  if (e && e.METERLINE_WINDOW_GRACE > e.METERLINE_WINDOW_MAX_DELAY) {
    issues.push('METERLINE_WINDOW_GRACE: must not exceed METERLINE_WINDOW_MAX_DELAY');
  }
  // Each round asks AWS once per contract buyer: more often than a minute only spends the quota.
  if (e && e.METERLINE_ENTITLEMENTS_REFRESH_INTERVAL < 60_000) {
    issues.push('METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: must be at least 1m');
  }
  if (e && e.METERLINE_PRODUCE_TIMEOUT < 1_000) issues.push('METERLINE_PRODUCE_TIMEOUT: must be at least 1s');
  if (e && e.METERLINE_PRODUCE_UNHEALTHY_AFTER <= e.METERLINE_PRODUCE_TIMEOUT) {
    issues.push(
      'METERLINE_PRODUCE_UNHEALTHY_AFTER: must be longer than METERLINE_PRODUCE_TIMEOUT (one failed send must not restart the pod)',
    );
  }
  const api: MeteringApi = container ? 'MeterUsage' : 'BatchMeterUsage';
  if (
    e &&
    e.METERLINE_WINDOW_MAX_DELAY + e.METERLINE_COMMIT_INTERVAL + e.METERLINE_SUBMIT_MARGIN >=
      DEFAULT_ACCEPTANCE_WINDOW_MS[api]
  ) {
    issues.push(
      `METERLINE_WINDOW_MAX_DELAY: max delay + commit interval + submit margin must stay under the ${DEFAULT_ACCEPTANCE_WINDOW_MS[api] / 3_600_000}h AWS acceptance window of ${api}`,
    );
  }

  // The plan and customers files are checked even when other keys are wrong, so one run lists everything.
  const attempt = <T>(load: () => T): T | undefined => {
    try {
      return load();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues.push(...error.issues.map((i) => `${error.source}: ${i}`));
      return undefined;
    }
  };
  const plan = source.METERLINE_PLAN ? attempt(() => loadPlan(source.METERLINE_PLAN as string)) : undefined;
  const customers = source.METERLINE_CUSTOMERS
    ? attempt(() => loadCustomers(source.METERLINE_CUSTOMERS as string))
    : new Map();
  if (plan && customers) {
    for (const [tenant, mapping] of customers) {
      for (const dimension of Object.keys(mapping.contract?.entitlements ?? {})) {
        if (plan.dimensions.get(dimension)?.model !== 'contract') {
          issues.push(
            `customers file: ${tenant}.contract.entitlements.${dimension}: not a contract dimension of the metering plan`,
          );
        }
      }
    }
  }
  if (issues.length || !e || !plan || !customers) throw new ConfigError('configuration', issues);

  return {
    env: e,
    kafka: {
      brokers: (e.KAFKA_BROKERS ?? '')
        .split(',')
        .map((b) => b.trim())
        .filter(Boolean),
      clientId: e.KAFKA_CLIENT_ID,
      security: kafkaSecurity.security,
    },
    redis: {
      url: e.REDIS_URL,
      prefix: e.METERLINE_REDIS_PREFIX,
      cluster: e.REDIS_CLUSTER,
      commandTimeoutMs: e.METERLINE_REDIS_COMMAND_TIMEOUT,
      ...(e.REDIS_TLS_CA_FILE ? { tlsCaFile: e.REDIS_TLS_CA_FILE } : {}),
    },
    schemaRegistryUrl: e.SCHEMA_REGISTRY_URL,
    topics: {
      usage: e.METERLINE_TOPIC_USAGE,
      submissions: e.METERLINE_TOPIC_SUBMISSIONS,
      failed: e.METERLINE_TOPIC_FAILED,
      changelog: e.METERLINE_TOPIC_CHANGELOG,
      audit: e.METERLINE_TOPIC_AUDIT,
      partitions: e.METERLINE_TOPIC_PARTITIONS,
    },
    console: consoleSetup.settings,
    allowShortUsageRetention: e.METERLINE_ALLOW_SHORT_RETENTION,
    plan,
    customerMap: customers,
    customers: customersObject(customers),
    window: {
      graceMs: e.METERLINE_WINDOW_GRACE,
      maxDelayMs: e.METERLINE_WINDOW_MAX_DELAY,
      maxOutOfOrdernessMs: e.METERLINE_MAX_OUT_OF_ORDERNESS,
      idleTimeoutMs: e.METERLINE_IDLE_TIMEOUT,
      latePolicy: e.METERLINE_LATE_POLICY,
      commitIntervalMs: e.METERLINE_COMMIT_INTERVAL,
      maxFutureSkewMs: e.METERLINE_MAX_FUTURE_SKEW,
      submitMarginMs: e.METERLINE_SUBMIT_MARGIN,
    },
    groups: {
      processor: e.METERLINE_PROCESSOR_GROUP,
      worker: e.METERLINE_WORKER_GROUP,
      sessionTimeoutMs: e.METERLINE_SESSION_TIMEOUT,
      concurrency: e.METERLINE_PROCESSOR_CONCURRENCY,
    },
    maxMessageBytes: e.METERLINE_MAX_MESSAGE_BYTES,
    produce: {
      timeoutMs: e.METERLINE_PRODUCE_TIMEOUT,
      unhealthyAfterMs: e.METERLINE_PRODUCE_UNHEALTHY_AFTER,
    },
    worker: {
      region: e.AWS_REGION,
      endpoint: e.AWS_ENDPOINT_URL_MARKETPLACE_METERING,
      mode: e.METERLINE_METERING_MODE,
      api,
      rateLimit: e.METERLINE_RATE_LIMIT,
      requestTimeoutMs: e.METERLINE_AWS_REQUEST_TIMEOUT,
    },
    registration: {
      port: e.METERLINE_REGISTRATION_LISTEN_PORT,
      ratePerAddress: e.METERLINE_REGISTRATION_RATE_PER_ADDRESS,
      rateTotal: e.METERLINE_REGISTRATION_RATE_TOTAL,
      trustedProxyHops: e.METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS,
      redirectUrl: e.METERLINE_REGISTRATION_REDIRECT_URL,
      snsTopicArns: e.METERLINE_SNS_TOPIC_ARNS === '*' ? '*' : (e.METERLINE_SNS_TOPIC_ARNS?.split(',') ?? []),
      eventsApiKey: e.METERLINE_EVENTS_API_KEY,
      linkApiKey: e.METERLINE_LINK_API_KEY,
      handoffSecret: e.METERLINE_HANDOFF_SIGNING_SECRET,
    },
    entitlements: {
      endpoint: e.AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE,
      refreshIntervalMs: e.METERLINE_ENTITLEMENTS_REFRESH_INTERVAL,
    },
    logLevel: e.LOG_LEVEL,
    opsPort:
      e.METERLINE_OPS_PORT === 'off'
        ? undefined
        : e.METERLINE_OPS_PORT === undefined
          ? defaultOpsPort(roles)
          : Number(e.METERLINE_OPS_PORT),
    warnings: unknownVariableWarnings(env),
  };
}
