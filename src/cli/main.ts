#!/usr/bin/env -S node --disable-warning=TimeoutNegativeWarning
/**
 * `meterline`: one binary, one subcommand per role. Each command lives in its own module.
 *
 * Conventions, the same for every command: data on stdout only (logs, warnings and progress on stderr);
 * `-o table|json|yaml` where a command prints data; usage errors in two short lines that point to
 * `--help`; one-shot commands end within `--timeout` with one line naming the service and the setting; the
 * exit codes of EXIT_CODES_HELP.
 */
// First: an unsupported Node gets one line saying which Node to use, before anything else is loaded.
import './node-check.ts';
// Then the OpenTelemetry SDK starts before any other module is evaluated. The production command also
// loads it with `node --import` (the same module, evaluated once).
import '../observability/otel-preload.ts';
import { Command, type CommanderError } from 'commander';
import { ConfigError } from '../errors.ts';
import { registerConsoleCommand } from './console-command.ts';
import { registerCustomersCommand } from './customers-command.ts';
import { registerDlqCommand } from './dlq-command.ts';
import { registerEmulatorCommand } from './emulator-command.ts';
import { registerHandoffCommand } from './handoff-command.ts';
import { EXIT, EXIT_CODES_HELP, ServiceUnavailableError } from './one-shot.ts';
import { withExamples } from './output.ts';
import { registerPipelineCommands } from './pipeline-commands.ts';
import { registerProduceCommand } from './produce-command.ts';
import { registerReconcileCommand } from './reconcile-command.ts';
import { registerRegistrationCommand } from './registration-command.ts';
import { registerStatusCommand } from './status-command.ts';
import { registerTraceCommand } from './trace-command.ts';
import { versionLine } from './version.ts';

const program = new Command()
  .name('meterline')
  .description('Usage metering pipeline for AWS Marketplace: Kafka → hourly windows in Redis → AWS Metering')
  .version(versionLine(), '-V, --version', 'print the version and build');

registerPipelineCommands(program);
registerProduceCommand(program);
registerRegistrationCommand(program);
registerEmulatorCommand(program);
registerDlqCommand(program);
registerStatusCommand(program);
registerCustomersCommand(program);
registerTraceCommand(program);
registerHandoffCommand(program);
registerReconcileCommand(program);
registerConsoleCommand(program);

withExamples(program, [
  'meterline run',
  'meterline status -o json',
  'meterline dlq list --filter reason=customer_not_subscribed',
  'meterline status --help',
]);
program.addHelpText('after', EXIT_CODES_HELP);

/** Short usage errors naming the command and its --help, and the exit codes, on every command. */
function applyConventions(command: Command, path: string): void {
  command.showHelpAfterError(false);
  command.configureOutput({
    outputError: (text, write) =>
      write(`${path}: ${text.replace(/^error: /, '').trimEnd()}\nRun '${path} --help' for usage.\n`),
  });
  command.exitOverride((error: CommanderError) => {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') process.exit(EXIT.ok);
    // The command's own failures (command.error) carry their code; commander's are usage errors.
    process.exit(error.code === 'commander.error' ? error.exitCode : EXIT.usage);
  });
  for (const sub of command.commands) applyConventions(sub, `${path} ${sub.name()}`);
}
applyConventions(program, 'meterline');

/** The command running, for the one line an error gets. */
let running = 'meterline';
program.hook('preAction', (_, action) => {
  const names: string[] = [];
  for (let c: Command | null = action; c; c = c.parent) names.unshift(c.name());
  running = names.join(' ');
});

try {
  await program.parseAsync(process.argv);
  // One-shot commands are done once their action is; clients still closing must not keep the process.
  process.exit(process.exitCode ?? EXIT.ok);
} catch (error) {
  // One clear line for the operator; the stack only when asked for.
  const e = error as Error & { code?: string };
  const code =
    error instanceof ServiceUnavailableError
      ? EXIT.unavailable
      : error instanceof ConfigError
        ? EXIT.usage
        : EXIT.failed;
  const tag = code === EXIT.failed && typeof e.code === 'string' ? `[${e.code}] ` : '';
  process.stderr.write(`${running}: ${tag}${e.message ?? String(error)}\n`);
  if (process.env.LOG_LEVEL === 'debug' || process.env.LOG_LEVEL === 'trace')
    process.stderr.write(`${e.stack}\n`);
  process.exit(code);
}
