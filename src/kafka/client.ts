/** One place that builds kafkajs clients, so logging and retry settings stay consistent. */
import { Kafka, type LogEntry, logLevel, type Producer } from 'kafkajs';
import type { Logger } from '../log.ts';
import { silenceKafkajsTimeoutWarning } from './quiet-warnings.ts';

const LEVEL: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

export function createKafka(options: { brokers: string[]; clientId: string; logger: Logger }): Kafka {
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  silenceKafkajsTimeoutWarning();
  const log = options.logger.child({ component: 'kafkajs' });
  return new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    // kafkajs logs rebalances and reconnects at ERROR; they are routine, so route them through pino at warn.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        log[LEVEL[level] === 'error' ? 'warn' : (LEVEL[level] ?? 'info')](rest, message);
      },
    retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
}

/**
 * An idempotent producer. It retries until the broker answers: a message that was not acknowledged must
 * never be given up on, since callers only move their own checkpoints after the ack.
 */
export function idempotentProducer(kafka: Kafka): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
}
