/** `meterline console`: the operator console in the browser (src/console), a long-running role. */
import type { Command } from 'commander';
import { stores } from '../console/data.ts';
import { startConsole } from '../console/server.ts';
import { createKafka } from '../kafka/client.ts';
import { DEFAULT_JAEGER_URL, JaegerClient } from '../observability/jaeger-client.ts';
import { startOpsServer } from '../observability/ops-server.ts';
import { createRedis } from '../redis/client.ts';
import { loadConfigOrExit, roleLogger, untilSignal } from './lifecycle.ts';
import { withExamples } from './output.ts';

const HELP = `
Reads Kafka, Redis and Jaeger (METERLINE_JAEGER_URL, default ${DEFAULT_JAEGER_URL}) with the same settings as
the pipeline, and listens on METERLINE_CONSOLE_PORT (default 9470); /metrics, /healthz and /readyz on
METERLINE_OPS_PORT (default 9467). It does not start open: set
METERLINE_CONSOLE_TOKENS (name:role:token, comma-separated; role viewer or operator; tokens of 24+
characters), or METERLINE_CONSOLE_IDENTITY_HEADER (the header an authenticating proxy in front sets to the
user) with METERLINE_CONSOLE_OPERATORS (the identities that may redrive). Redrives are written to the audit
topic METERLINE_TOPIC_AUDIT (default meterline-console-audit), created when missing.`;

export function registerConsoleCommand(program: Command): void {
  const command = program
    .command('console')
    .description('the operator console in the browser: status, customers, records, dead letters')
    .addHelpText('after', HELP);
  withExamples(command, [
    'METERLINE_CONSOLE_TOKENS="ana:operator:$(openssl rand -hex 24)" meterline console',
    'METERLINE_CONSOLE_IDENTITY_HEADER=X-Forwarded-User METERLINE_CONSOLE_OPERATORS=ana@example.com meterline console',
  ]).action(async () => {
    const config = loadConfigOrExit(['console']);
    const logger = roleLogger('console', config);
    const kafka = createKafka({ ...config.kafka, logger });
    const redis = createRedis(config.redis.url, config.redis);
    const jaeger = new JaegerClient(config.env.METERLINE_JAEGER_URL ?? DEFAULT_JAEGER_URL);
    // /healthz, /readyz and /metrics on the ops port, as every role (the chart probes them there).
    const ops = config.opsPort === undefined ? undefined : await startOpsServer(config.opsPort);
    const running = await startConsole(stores(config, kafka, redis, jaeger), logger, {
      port: config.console.port,
    });
    ops?.setReady(true);
    logger.info({ port: running.port, ops: ops?.port, jaeger: jaeger.baseUrl }, 'meterline console started');
    await untilSignal(logger, async () => {
      ops?.setReady(false);
      await running.close();
      await ops?.close();
      redis.disconnect();
    });
  });
}
