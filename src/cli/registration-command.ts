/** `meterline registration`: the SaaS registration URL and the subscription lifecycle endpoint. */
import type { Command } from 'commander';
import { startRegistration } from '../subscribe/registration.ts';
import { loadConfigOrExit, roleLogger, untilSignal } from './lifecycle.ts';
import { withExamples } from './output.ts';

export function registerRegistrationCommand(program: Command): void {
  const registration = program
    .command('registration')
    .description(
      'registration URL (POST /marketplace/register → ResolveCustomer → customer directory) and lifecycle events (POST /marketplace/events)',
    )
    .addHelpText(
      'after',
      `
Configuration comes from the environment (or a file named by METERLINE_CONFIG); see docs/configuration.md.
Required: REDIS_URL, METERLINE_PLAN, AWS_REGION. Optional: METERLINE_REGISTRATION_LISTEN_PORT (8080),
METERLINE_REGISTRATION_REDIRECT_URL, METERLINE_SNS_TOPIC_ARNS, METERLINE_EVENTS_API_KEY.
/metrics, /healthz and /readyz listen on METERLINE_OPS_PORT (default 9466). Logs go to stderr.`,
    );
  withExamples(registration, [
    'meterline registration',
    'METERLINE_REGISTRATION_LISTEN_PORT=8081 meterline registration',
  ]).action(async () => {
    const config = loadConfigOrExit(['registration']);
    const logger = roleLogger('registration', config);
    const running = await startRegistration(config, logger);
    logger.info(
      { port: running.server.port, redirect: config.registration.redirectUrl ?? null },
      'meterline registration started: POST /marketplace/register, POST /marketplace/events',
    );
    await untilSignal(logger, () => running.stop());
  });
}
