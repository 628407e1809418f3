/**
 * The `meterline` command tree with its conventions applied. main.ts parses process.argv with it; the docs
 * test parses every command line of the README and docs/ with it, so an unknown command or flag there fails.
 */
import { Command, type CommanderError } from 'commander';
import { versionLine } from '../observability/version.ts';
import { registerConsoleCommand } from './console-command.ts';
import { registerCustomersCommand } from './customers-command.ts';
import { registerDlqCommand } from './dlq-command.ts';
import { registerEmulatorCommand } from './emulator-command.ts';
import { registerHandoffCommand } from './handoff-command.ts';
import { EXIT, EXIT_CODES_HELP } from './one-shot.ts';
import { withExamples } from './output.ts';
import { registerPipelineCommands } from './pipeline-commands.ts';
import { registerProduceCommand } from './produce-command.ts';
import { registerReconcileCommand } from './reconcile-command.ts';
import { registerRegistrationCommand } from './registration-command.ts';
import { registerStatusCommand } from './status-command.ts';
import { registerTraceCommand } from './trace-command.ts';

export function buildProgram(): Command {
  const program = new Command()
    .name('meterline')
    .description(
      'Usage metering pipeline for AWS Marketplace: Kafka → hourly windows in Redis → AWS Metering',
    )
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
  applyConventions(program, 'meterline');
  return program;
}

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
