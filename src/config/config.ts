/**
 * Runtime configuration: environment variables, optionally layered over a file (METERLINE_CONFIG, JSON or
 * YAML, with the same keys). The environment wins. Validated once at start-up; every violation is listed
 * with its key.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import { ConfigError } from '../errors.ts';
import { type KafkaSecurity, kafkaSecurityFromEnv } from '../kafka/security.ts';
import { DEFAULT_ACCEPTANCE_WINDOW_MS, type MeteringApi } from '../metering/aws-window.ts';
import { type ConsoleSettings, consoleSettings } from './console.ts';
import { type CustomerMap, type Customers, customersObject, loadCustomers } from './customers.ts';
import { brokerIssues, unknownVariableWarnings } from './env-checks.ts';
import { ENV_KEYS, type Env, EnvSchema } from './env-schema.ts';
import { readStructuredFile } from './load-file.ts';
import { loadPlan, type Plan } from './plan.ts';

/** HS256 keys shorter than the hash (32 bytes) weaken it (RFC 7518 §3.2): the hand-off token's key. */
const MIN_SECRET_BYTES = 32;
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
  /** The processor's dedupe index: id hashes kept in memory, and where older ones spill. */
  dedupe: { memoryIds: number; spillDir: string };
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

/** Merges the optional config file under the environment, keeping only known keys. */
function collectSource(env: NodeJS.ProcessEnv): Record<string, string> {
  const merged: Record<string, string> = {};
  const file = env.METERLINE_CONFIG;
  if (file) {
    const raw = readStructuredFile(file, `config file (METERLINE_CONFIG=${file})`);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new ConfigError(`config file ${file}`, ['must be a map of configuration keys']);
    }
    const unknown = Object.keys(raw).filter((k) => !ENV_KEYS.includes(k as keyof Env));
    if (unknown.length) {
      throw new ConfigError(
        `config file ${file}`,
        unknown.map((k) => `${k}: unknown key`),
      );
    }
    for (const [k, v] of Object.entries(raw)) if (v !== null && v !== undefined) merged[k] = String(v);
  }
  for (const k of ENV_KEYS) {
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
    dedupe: {
      memoryIds: e.METERLINE_DEDUPE_MEMORY_IDS,
      spillDir: e.METERLINE_DEDUPE_SPILL_DIR ?? os.tmpdir(),
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
