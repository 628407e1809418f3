#!/usr/bin/env -S node --disable-warning=TimeoutNegativeWarning
/** `meterline`: one binary, one subcommand per role. Each command lives in its own module. */
// First import: the OpenTelemetry SDK starts before any other module is evaluated. The production
// command also loads it with `node --import` (the same module, evaluated once).
import '../observability/otel-preload.ts';
import { Command } from 'commander';
import { registerCustomersCommand } from './customers-command.ts';
import { registerDlqCommand } from './dlq-command.ts';
import { registerEmulatorCommand } from './emulator-command.ts';
import { registerHandoffCommand } from './handoff-command.ts';
import { registerPipelineCommands } from './pipeline-commands.ts';
import { registerProduceCommand } from './produce-command.ts';
import { registerRegistrationCommand } from './registration-command.ts';
import { registerStatusCommand } from './status-command.ts';
import { registerTraceCommand } from './trace-command.ts';

const program = new Command()
  .name('meterline')
  .description('Usage metering pipeline for AWS Marketplace: Kafka → hourly windows in Redis → AWS Metering')
  .showHelpAfterError();

registerPipelineCommands(program);
registerProduceCommand(program);
registerRegistrationCommand(program);
registerEmulatorCommand(program);
registerDlqCommand(program);
registerStatusCommand(program);
registerCustomersCommand(program);
registerTraceCommand(program);
registerHandoffCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // One clear line for the operator; the stack only when asked for.
  const e = error as Error & { code?: string };
  process.stderr.write(`meterline: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(error)}\n`);
  if (process.env.LOG_LEVEL === 'debug' || process.env.LOG_LEVEL === 'trace')
    process.stderr.write(`${e.stack}\n`);
  process.exit(1);
}
