/**
 * One-shot commands (status, customers, dlq, produce, trace, handoff verify, emulator records) either do
 * their job or end within `--timeout` with one line naming the service that did not answer and the setting
 * that points at it, and a documented exit code. They never retry for ever, never print a stack, and
 * their clients log nothing below error (LOG_LEVEL turns that up), on stderr.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { Kafka } from 'kafkajs';
import type { Config } from '../config/config.ts';
import { formatDuration, lacksUnit, parseDuration } from '../config/duration.ts';
import { createKafka } from '../kafka/client.ts';
import { createLogger, type Logger, redactUrl } from '../log.ts';
import { createRedis, type ScriptedRedis } from '../redis/client.ts';

/** The exit codes of every command; `meterline --help` and README list them. */
export const EXIT = {
  ok: 0,
  /** The command ran and failed: an entry not found, a token refused, a send that failed. */
  failed: 1,
  /** Usage or configuration: unknown option, bad id, invalid setting, port in use, unsupported Node. */
  usage: 2,
  /** A service (Kafka, Redis, Jaeger, the schema registry, the emulator) did not answer within --timeout. */
  unavailable: 3,
  /** Interrupted (Ctrl-C). */
  interrupted: 130,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0    done
  1    the command ran and failed (an entry not found, a token refused, a send that failed)
  2    usage or configuration error, found before anything was contacted (unknown option, bad id,
       invalid setting, ops port in use, unsupported Node)
  3    a service (Kafka, Redis, Jaeger, the schema registry, the emulator) did not answer within --timeout
  130  interrupted (Ctrl-C)
`;

export const DEFAULT_TIMEOUT = '5s';

/** A service that did not answer: what it is, where it was looked for, and the setting that says so. */
export interface Unreachable {
  service: string;
  target: string;
  setting: string;
}

export class ServiceUnavailableError extends Error {
  readonly services: readonly Unreachable[];
  constructor(services: readonly Unreachable[], timeoutMs: number) {
    super(
      `${services
        .map((s) => `cannot reach ${s.service} at ${s.target} (check ${s.setting})`)
        .join('; ')} within ${formatDuration(timeoutMs)}`,
    );
    this.name = 'ServiceUnavailableError';
    this.services = services;
  }
}

/** `--timeout <duration>`: how long each service may take to answer. */
export function withTimeout(command: Command): Command {
  return command.addOption(
    new Option('--timeout <duration>', 'how long to wait for each service to answer (Kafka, Redis, …)')
      .argParser(parseTimeout)
      .default(DEFAULT_TIMEOUT),
  );
}

export interface TimeoutOptions {
  timeout: string | number;
}

/** The --timeout in milliseconds (commander keeps the default as written). */
export function timeoutMs(o: TimeoutOptions): number {
  return typeof o.timeout === 'number' ? o.timeout : (parseDuration(o.timeout) as number);
}

function parseTimeout(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    throw new InvalidArgumentError(
      lacksUnit(value) ? 'needs a unit, like 500ms, 5s or 1m' : 'must be a duration like 500ms, 5s or 1m',
    );
  }
  return ms;
}

/**
 * Tries every service at once, each for at most `ms`; throws one ServiceUnavailableError naming each that
 * failed or did not answer in time.
 */
export async function reach(
  ms: number,
  checks: readonly (Unreachable & { connect: () => Promise<unknown> })[],
): Promise<void> {
  const results = await Promise.all(
    checks.map(async (c) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      });
      const ok = await Promise.race([c.connect().then(() => true as const), late]).catch(() => false);
      clearTimeout(timer);
      return ok ? undefined : { service: c.service, target: c.target, setting: c.setting };
    }),
  );
  const failed = results.filter((r): r is Unreachable => r !== undefined);
  if (failed.length) throw new ServiceUnavailableError(failed, ms);
}

/** Any promise raced against the --timeout; a late or failed answer is the service's fault. */
export async function withinTimeout<T>(ms: number, service: Unreachable, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ServiceUnavailableError([service], ms)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Clients' logs for one-shot tools: stderr, errors only unless LOG_LEVEL says otherwise. */
export function oneShotLogger(command: string): Logger {
  return createLogger(`meterline-${command}`, process.env.LOG_LEVEL ?? 'error');
}

export function kafkaService(brokers: readonly string[], setting = 'KAFKA_BROKERS'): Unreachable {
  return { service: 'Kafka', target: brokers.join(','), setting };
}

export function redisService(url: string): Unreachable {
  return { service: 'Redis', target: redactUrl(url), setting: 'REDIS_URL' };
}

/** A Kafka client and the check that its brokers answer (an admin connection, closed after). */
export function oneShotKafka(
  config: Pick<Config['kafka'], 'brokers' | 'clientId'> & Partial<Pick<Config['kafka'], 'security'>>,
  command: string,
  setting = 'KAFKA_BROKERS',
): { kafka: Kafka; check: Unreachable & { connect: () => Promise<unknown> } } {
  const kafka = createKafka({ ...config, logger: oneShotLogger(command) });
  return {
    kafka,
    check: {
      ...kafkaService(config.brokers, setting),
      connect: async () => {
        const admin = kafka.admin();
        await admin.connect();
        await admin.disconnect();
      },
    },
  };
}

/**
 * A Redis client that does not reconnect (a one-shot command fails instead of waiting), with its errors
 * kept off stderr (ioredis prints "Unhandled error event" for each without a listener), and the check
 * that connects it.
 */
function oneShotRedis(config: Config['redis']): {
  redis: ScriptedRedis;
  check: Unreachable & { connect: () => Promise<unknown> };
} {
  const redis = createRedis(config.url, { ...config, lazyConnect: true, failFast: true });
  redis.on('error', () => {});
  return { redis, check: { ...redisService(config.url), connect: () => redis.connect() } };
}

/**
 * Redis for one command: checked within --timeout before `work` runs, disconnected after it, whatever
 * happens.
 */
export async function withRedis<T>(
  config: Pick<Config, 'redis'>,
  o: TimeoutOptions,
  work: (redis: ScriptedRedis) => Promise<T>,
): Promise<T> {
  const { redis, check } = oneShotRedis(config.redis);
  return connected(redis, [check], o, () => work(redis));
}

/**
 * Kafka and Redis for one command, as `withRedis`: both checked at once. The Kafka client holds no
 * connection of its own to close (each admin and consumer closes itself).
 */
export async function withKafkaAndRedis<T>(
  config: Pick<Config, 'kafka' | 'redis'>,
  o: TimeoutOptions,
  command: string,
  work: (kafka: Kafka, redis: ScriptedRedis) => Promise<T>,
): Promise<T> {
  const { kafka, check: kafkaUp } = oneShotKafka(config.kafka, command);
  const { redis, check: redisUp } = oneShotRedis(config.redis);
  return connected(redis, [kafkaUp, redisUp], o, () => work(kafka, redis));
}

async function connected<T>(
  redis: ScriptedRedis,
  checks: Parameters<typeof reach>[1],
  o: TimeoutOptions,
  work: () => Promise<T>,
): Promise<T> {
  try {
    await reach(timeoutMs(o), checks);
    return await work();
  } finally {
    redis.disconnect();
  }
}
