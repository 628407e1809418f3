/**
 * pino JSON logs. Secrets are redacted wherever they appear in a logged object, and every line written
 * inside a recording span carries its `trace_id` and `span_id`, so a log line leads to its trace.
 */
import { type DestinationStream, type Logger, pino } from 'pino';
import { activeTraceIds } from './observability/tracing.ts';

export type { Logger };

/** Keys whose values never reach a log line, at the top level or one level down. */
const SECRET_KEYS = [
  'password',
  'secretAccessKey',
  'sessionToken',
  'authorization',
  'token',
  'saslPassword',
  'REDIS_URL',
  'KAFKA_SASL_PASSWORD',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
];

export const REDACT_PATHS = [
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
  'config.env.REDIS_URL',
  'headers.authorization',
  '*.headers.authorization',
  'sasl.password',
  '*.sasl.password',
];

export function createLogger(
  name: string,
  level = process.env.LOG_LEVEL ?? 'info',
  destination?: DestinationStream,
): Logger {
  const options = {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    mixin: activeTraceIds,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A URL with its password (and user) replaced, for log lines that must name an endpoint. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//[redacted]@');
  }
}
