#!/usr/bin/env node
/**
 * Local stack CLI (no Docker):
 *   node deploy/stack/stack.ts up [--only kafka,redis] [--timeout <seconds>]   (redis-cluster only with --only)
 *   node deploy/stack/stack.ts down [--purge]
 *   node deploy/stack/stack.ts status
 *   node deploy/stack/stack.ts env            # eval "$(node deploy/stack/stack.ts env)"
 */
import { parseArgs } from 'node:util';
import { silenceKafkajsTimeoutWarning } from '../../src/kafka/quiet-warnings.ts';
import {
  currentStackEnv,
  DEFAULT_SERVICE_NAMES,
  ensureServices,
  OTLP_ENV,
  SERVICES,
  type ServiceName,
  StackError,
  stackStatus,
  stopStack,
  tracingWanted,
} from './index.ts';

const USAGE = `usage: stack.ts <command>
  up [--only kafka,redis,emulator] [--timeout <s>]   start what isn't running and healthy; reuse the rest
                                                     (Jaeger too unless METERLINE_TRACING=off; the optional
                                                     redis-cluster starts only with --only)
  down [--purge]                                     stop what 'up' started (by pid); --purge deletes .stack/
  status                                             pid, alive, port, RSS of each service, and the env
  env                                                export lines for a shell: eval "$(… env)"`;

silenceKafkajsTimeoutWarning();

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

function shellQuote(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

function exportLines(env: Partial<Record<string, string>>): string[] {
  return [...SERVICES.map((s) => s.envVar), OTLP_ENV]
    .filter((name) => env[name])
    .map((name) => `export ${name}=${shellQuote(env[name] as string)}`);
}

/** What a bare `stack:up` starts: the default services, and Jaeger unless tracing is switched off. */
export function defaultUpNames(env: NodeJS.ProcessEnv = process.env): ServiceName[] {
  return [...DEFAULT_SERVICE_NAMES, ...(tracingWanted(env) ? (['jaeger'] as const) : [])];
}

async function up(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { only: { type: 'string' }, timeout: { type: 'string' } },
    strict: true,
  });
  const names = values.only
    ? (values.only.split(',').map((n) => n.trim()) as ServiceName[])
    : defaultUpNames();
  const t0 = Date.now();
  const result = await ensureServices(names, {
    log: out,
    ...(values.timeout ? { readyTimeoutMs: Number(values.timeout) * 1000 } : {}),
  });
  const reused = Object.entries(result.outcomes)
    .filter(([, o]) => o !== 'started')
    .map(([n, o]) => `${n} (${o})`);
  out(
    `stack ready in ${((Date.now() - t0) / 1000).toFixed(1)} s` +
      ` (started: ${result.started.join(', ') || 'none'}${reused.length ? `; ${reused.join(', ')}` : ''})`,
  );
  for (const line of exportLines(result.env)) out(line);
  return 0;
}

async function down(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { purge: { type: 'boolean' } }, strict: true });
  const stopped = await stopStack({ log: out, purge: values.purge === true });
  out(stopped.length ? `stopped: ${stopped.join(', ')}` : 'nothing was running');
  return 0;
}

function pad(text: string, width: number): string {
  return text.padEnd(width);
}

async function status(): Promise<number> {
  const rows = await stackStatus();
  const header = ['service', 'pid', 'alive', 'healthy', 'port', 'rss', 'log'];
  const table: string[][] = [header];
  for (const s of rows) {
    if (s.external) {
      table.push([
        s.name,
        '-',
        '-',
        s.healthy ? 'yes' : 'NO',
        `external ${s.envVar}=${s.external}`,
        '-',
        '-',
      ]);
      continue;
    }
    const rec = s.record;
    const ports = rec
      ? Object.entries(rec.ports)
          .map(([k, v], i) => (i === 0 ? String(v) : `${k} ${v}`))
          .join(', ')
      : '-';
    table.push([
      s.name,
      rec ? String(rec.pid) : '-',
      s.alive ? 'yes' : 'no',
      s.healthy === undefined ? '-' : s.healthy ? 'yes' : 'NO',
      ports,
      s.rssKb !== undefined ? `${(s.rssKb / 1024).toFixed(1)} MB` : '-',
      rec?.log ?? '-',
    ]);
  }
  const widths = header.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)) + 2);
  for (const r of table)
    out(
      r
        .map((c, i) => pad(c, widths[i] as number))
        .join('')
        .trimEnd(),
    );
  out('');
  const env = currentStackEnv();
  const lines = exportLines(env);
  if (lines.length) for (const line of lines) out(line);
  else out('# nothing running: npm run stack:up');
  // An optional service (redis-cluster) that is simply not running is fine.
  const optional = new Set(SERVICES.filter((s) => s.optional).map((s) => s.name));
  return rows.every((s) => s.healthy === true || (optional.has(s.name) && !s.alive && !s.external)) ? 0 : 1;
}

function env(): number {
  const current = currentStackEnv();
  for (const line of exportLines(current)) out(line);
  const missing = SERVICES.filter((s) => !s.optional && !current[s.envVar]).map((s) => s.name);
  if (missing.length) {
    err(`# not running: ${missing.join(', ')} (npm run stack:up)`);
    return 1;
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'down':
      return down(rest);
    case 'status':
      return status();
    case 'env':
      return env();
    case undefined:
    case '-h':
    case '--help':
      out(USAGE);
      return command ? 0 : 2;
    default:
      err(`unknown command ${command}\n${USAGE}`);
      return 2;
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  const code = (e as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    err(`stack: ${(e as Error).message}\n${USAGE}`);
    process.exitCode = 2;
  } else {
    err(
      `stack: ${e instanceof StackError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
    );
    process.exitCode = 1;
  }
}
