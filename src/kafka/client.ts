/** One place that builds kafkajs clients, so logging and retry settings stay consistent. */
import { Kafka, type LogEntry, logLevel, type Producer } from 'kafkajs';
import { ConfigError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { installLazyRecords } from './lazy-records.ts';
import { silenceKafkajsTimeoutWarning } from './quiet-warnings.ts';
import { type KafkaSecurity, kafkaSecurityFromEnv } from './security.ts';

const LEVEL: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/**
 * `security` comes from the validated config; tools that read no config take it from the environment
 * (KAFKA_SSL, KAFKA_SSL_CA_FILE, KAFKA_SASL_*), where a mistake fails here, by name.
 */
export function createKafka(options: {
  brokers: string[];
  clientId: string;
  logger: Logger;
  security?: KafkaSecurity;
}): Kafka {
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  silenceKafkajsTimeoutWarning();
  // Fetched records are decoded on first read, not all at once (src/kafka/lazy-records.ts).
  installLazyRecords();
  const log = options.logger.child({ component: 'kafkajs' });
  let security = options.security;
  if (!security) {
    const fromEnv = kafkaSecurityFromEnv(process.env);
    if (fromEnv.issues.length) throw new ConfigError('Kafka security settings', fromEnv.issues);
    security = fromEnv.security;
  }
  return new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    ...(security.ssl ? { ssl: security.ssl } : {}),
    ...(security.sasl ? { sasl: security.sasl } : {}),
    // kafkajs logs rebalances and reconnects at ERROR; they are routine, so route them through pino at warn.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        // Guarded producers bound an idempotent producer's retries on purpose, and replace it after a
        // failed send (src/kafka/guarded-producer.ts), which keeps the guarantee this warns about.
        if (message === BOUNDED_IDEMPOTENT_WARNING) return void log.debug(rest, message);
        log[LEVEL[level] === 'error' ? 'warn' : (LEVEL[level] ?? 'info')](rest, message);
      },
    retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
}

const BOUNDED_IDEMPOTENT_WARNING =
  'Limiting retries for the idempotent producer may invalidate EoS guarantees';

/**
 * An idempotent producer that retries until the broker answers, for command-line tools (produce, dlq
 * redrive), whose user sees them wait. Pipeline stages use `GuardedProducer` (bounded sends) instead: an
 * endless retry there hangs the stage while the process looks healthy.
 */
export function idempotentProducer(kafka: Kafka): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
}
