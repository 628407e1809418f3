/** Shared start-up and shutdown for long-running commands: config errors print cleanly, Ctrl-C stops cleanly. */
import { type Config, loadConfig, type Role } from '../config/config.ts';
import { ConfigError } from '../errors.ts';
import { createLogger, type Logger } from '../log.ts';
import { shutdownTracing } from '../observability/tracing.ts';

/** The validated config; its warnings on stderr. A ConfigError prints its list and exits 2 (usage). */
export function loadConfigOrExit(roles: readonly Role[]): Config {
  let config: Config;
  try {
    config = loadConfig(roles);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`meterline: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  for (const warning of config.warnings) process.stderr.write(`meterline: warning: ${warning}\n`);
  return config;
}

/** Runs until SIGINT/SIGTERM, then calls stop once; a second signal exits at once. */
export function untilSignal(logger: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) process.exit(130);
      stopping = true;
      logger.info({ signal }, 'stopping');
      stop()
        .catch((err) => logger.error({ err }, 'error during shutdown'))
        // Spans of the last batches are flushed before the process goes.
        .then(() => shutdownTracing())
        .finally(() => resolve());
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
}

export function roleLogger(role: string, config?: Config): Logger {
  return createLogger(`meterline-${role}`, config?.logLevel);
}
