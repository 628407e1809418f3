/**
 * pino JSON logs. Secrets never reach a line, wherever they sit: every argument of a log call (the object at
 * any depth, errors with their message, stack and cause, the message and its interpolated values) and every
 * child logger's bindings (and setBindings) go through src/redact.ts first. Every line written inside a recording span carries
 * its `trace_id` and `span_id`, so a line leads to its trace. Lines go to stderr unless a destination is given.
 */
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';
import { activeTraceIds } from './observability/tracing.ts';
import { redactLogArgs, redactSecrets } from './redact.ts';

export type { Logger };

export function createLogger(
  name: string,
  level = process.env.LOG_LEVEL ?? 'info',
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    name,
    level,
    mixin: activeTraceIds,
    // Runs only for enabled levels: a disabled debug call costs nothing more than before.
    hooks: {
      logMethod(args, method) {
        method.apply(this, redactLogArgs(args) as Parameters<typeof method>);
      },
    },
  };
  // stderr: stdout carries only a command's data (`meterline status -o json | jq`).
  const logger = pino(options, destination ?? pino.destination({ dest: 2, sync: true }));
  // pino writes a child's bindings once, when it is made, past the hook (and children reset
  // formatters.bindings): redact them there. Children inherit from their parent, so this covers them all.
  const { child, setBindings } = logger;
  logger.child = function (this: Logger, bindings, childOptions) {
    return child.call(this, redactSecrets(bindings), childOptions);
  } as typeof child;
  logger.setBindings = function (this: Logger, bindings) {
    setBindings.call(this, redactSecrets(bindings));
  };
  return logger;
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
