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
import type { Command } from 'commander';
import { ConfigError } from '../errors.ts';
import { EXIT, ServiceUnavailableError } from './one-shot.ts';
import { buildProgram } from './program.ts';

const program = buildProgram();

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
