/**
 * `meterline emulator`: run the local AWS Marketplace Metering emulator, and `meterline emulator
 * records` to see what a running one accepted. Point the SDK (and the worker) at it with
 * AWS_ENDPOINT_URL_MARKETPLACE_METERING=<printed url>. Unlike `startEmulator`, the CLI enforces AWS's
 * 10 TPS quota by default; fault flags set the initial rates (change them later via /_emulator/faults).
 */
import { type Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { loadCustomersFile } from '../emulator/customers-file.ts';
import type { EmulatorSnapshot } from '../emulator/emulator-types.ts';
import { type FaultUpdate, NO_FAULTS, parseFaultUpdate } from '../emulator/faults.ts';
import { type RunningEmulator, startEmulator } from '../emulator/server.ts';
import type { CustomerSubscription } from '../emulator/subscriptions.ts';
import { HOUR_MS } from '../time/hours.ts';
import {
  ServiceUnavailableError,
  type TimeoutOptions,
  timeoutMs,
  type Unreachable,
  withTimeout,
} from './one-shot.ts';
import { type OutputOptions, printData, renderTable, withExamples, withOutput } from './output.ts';

const ENDPOINT_ENV = 'AWS_ENDPOINT_URL_MARKETPLACE_METERING';

interface ServeOptions {
  port: number;
  host: string;
  customers?: string;
  subscribe?: string[];
  batchWindowHours?: number;
  meterUsageWindowHours?: number;
  productCode?: string[];
  dimension?: string[];
  tps: number;
  throttleRate?: number;
  errorRate?: number;
  timeoutRate?: number;
  unprocessedRate?: number;
  latencyMs?: number;
  latencyJitterMs?: number;
  timeoutMs?: number;
  faultSeed?: number;
}

/** AWS's quota for each Metering API (per account and Region). */
const AWS_TPS = 10;

interface RecordsOptions extends OutputOptions, TimeoutOptions {
  endpoint?: string;
}

export function registerEmulatorCommand(program: Command): void {
  const emulator = program
    .command('emulator')
    .description('run a local AWS Marketplace Metering emulator (awsJson1_1, reachable by the AWS SDK)')
    .option('--port <n>', 'port to listen on (0 = any free port)', parsePort, 0)
    .option('--host <host>', 'interface to bind', '127.0.0.1')
    .option('--customers <file>', 'customer mapping JSON; every AWS id in it is subscribed')
    .option('--subscribe <ids...>', 'subscribe these CustomerAWSAccountIds / CustomerIdentifiers')
    .option('--batch-window-hours <h>', 'BatchMeterUsage acceptance window (default 24)', parseHours)
    .option('--meter-usage-window-hours <h>', 'MeterUsage acceptance window (default 6)', parseHours)
    .option('--product-code <codes...>', 'accept only these product codes (default: any)')
    .option('--dimension <names...>', 'accept only these usage dimensions (default: any)')
    .option(
      '--tps <n>',
      'requests/s per operation before ThrottlingException (0 = no quota)',
      number,
      AWS_TPS,
    )
    .option('--throttle-rate <r>', 'fraction of metering calls answered ThrottlingException', number)
    .option('--error-rate <r>', 'fraction of metering calls answered InternalServiceErrorException', number)
    .option('--timeout-rate <r>', 'fraction of metering calls never answered (see --timeout-ms)', number)
    .option('--unprocessed-rate <r>', 'fraction of BatchMeterUsage records left unprocessed', number)
    .option('--latency-ms <ms>', 'latency added to every metering call', number)
    .option('--latency-jitter-ms <ms>', 'up to this much more latency per call, drawn uniformly', number)
    .option(
      '--timeout-ms <ms>',
      'how long a timed-out call is held before the connection drops (default 30000)',
      number,
    )
    .option('--fault-seed <n>', 'seed for the fault draws, for reproducible runs', number)
    .action((options: ServeOptions, command: Command) => serve(options, command));
  withExamples(emulator, [
    'meterline emulator --port 4566 --subscribe 111111111111',
    'meterline emulator --customers customers.json --throttle-rate 0.2 --fault-seed 7',
  ]);

  const records = emulator
    .command('records')
    .description('list the records a running emulator accepted')
    .option('--endpoint <url>', `emulator URL (default: $${ENDPOINT_ENV})`);
  withExamples(withTimeout(withOutput(records)), [
    'meterline emulator records --endpoint http://127.0.0.1:4566',
    'meterline emulator records -o json',
  ]).action((options: RecordsOptions, command: Command) => printRecords(options, command));
}

/** Runs until SIGINT/SIGTERM, then closes the server and resolves (so the process exits 0). */
async function serve(options: ServeOptions, command: Command): Promise<void> {
  const logger = pino(
    { name: 'meterline-emulator', level: process.env.LOG_LEVEL ?? 'info' },
    pino.destination(2),
  );
  let fromFile: CustomerSubscription[] = [];
  try {
    fromFile = options.customers ? await loadCustomersFile(options.customers) : [];
  } catch (error) {
    command.error(`${(error as Error).message}`, { exitCode: 2 });
  }
  const customers = [...fromFile, ...(options.subscribe ?? []).map((id) => ({ id }))];
  const windowMs: { BatchMeterUsage?: number; MeterUsage?: number } = {};
  if (options.batchWindowHours !== undefined) windowMs.BatchMeterUsage = options.batchWindowHours * HOUR_MS;
  if (options.meterUsageWindowHours !== undefined)
    windowMs.MeterUsage = options.meterUsageWindowHours * HOUR_MS;

  const faults = faultFlags(options);
  try {
    parseFaultUpdate({ ...faults, tps: options.tps }, NO_FAULTS);
  } catch (error) {
    command.error(`${(error as Error).message}`, { exitCode: 2 });
  }

  let running: RunningEmulator;
  try {
    running = await startEmulator({
      port: options.port,
      host: options.host,
      customers,
      windowMs,
      productCodes: options.productCode,
      dimensions: options.dimension,
      tps: options.tps,
      faults,
      logger,
    });
  } catch (error) {
    const inUse = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
    command.error(
      `cannot start the emulator on ${options.host}:${options.port}: ${
        inUse ? 'the port is in use: pass another --port (0: any free one)' : (error as Error).message
      }`,
      { exitCode: 2 },
    );
  }
  // Plain stdout line, so scripts can `grep -o 'http://.*'`; structured logs go to stderr.
  process.stdout.write(`emulator listening on ${running.url}\n`);
  logger.info(
    { url: running.url, customers: customers.length, faults: running.state.faultSettings() },
    'emulator started',
  );

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  logger.info({ signal }, 'emulator stopping');
  await running.close();
}

async function printRecords(options: RecordsOptions, command: Command): Promise<void> {
  const endpoint = options.endpoint ?? process.env[ENDPOINT_ENV];
  if (!endpoint)
    command.error(`no emulator endpoint: pass --endpoint or set ${ENDPOINT_ENV}`, { exitCode: 2 });
  const service: Unreachable = {
    service: 'the Metering emulator',
    target: endpoint,
    setting: options.endpoint ? '--endpoint' : ENDPOINT_ENV,
  };
  const ms = timeoutMs(options);
  let response: Response;
  try {
    response = await fetch(new URL('/_emulator/records', endpoint), { signal: AbortSignal.timeout(ms) });
  } catch {
    throw new ServiceUnavailableError([service], ms);
  }
  if (!response.ok) command.error(`${endpoint} answered ${response.status}: ${await response.text()}`);
  const snapshot = (await response.json()) as EmulatorSnapshot;
  printData(options, snapshot, () => recordsTable(snapshot));
}

function recordsTable(snapshot: EmulatorSnapshot): string {
  const table = renderTable(
    ['hour (UTC)', 'customer', 'dimension', 'quantity', 'metering record id', 'api'],
    snapshot.records.map((r) => [
      r.timestamp,
      r.customer,
      r.dimension,
      String(r.quantity),
      r.meteringRecordId,
      r.api,
    ]),
  );
  const calls = Object.entries(snapshot.calls)
    .map(([op, n]) => `${op}=${n}`)
    .join(' ');
  const lines = [
    table,
    `${snapshot.records.length} record(s), ${snapshot.duplicates} duplicate(s); calls: ${calls || 'none'}`,
  ];
  // Absent from emulators older than the quota; shown only when something was throttled or injected.
  const throttled = Object.entries(snapshot.throttled ?? {}).map(([op, n]) => `${op}=${n}`);
  const injected = Object.entries(snapshot.injected ?? {})
    .filter(([, n]) => n > 0)
    .map(([kind, n]) => `${kind}=${n}`);
  if (throttled.length > 0 || injected.length > 0) {
    lines.push(
      `throttled by quota: ${throttled.join(' ') || 'none'}; injected faults: ${injected.join(' ') || 'none'}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** The fault flags that were given, under their `FaultSettings` names. */
function faultFlags(o: ServeOptions): FaultUpdate {
  const flags: FaultUpdate = {
    throttleRate: o.throttleRate,
    errorRate: o.errorRate,
    timeoutRate: o.timeoutRate,
    unprocessedRate: o.unprocessedRate,
    latencyMs: o.latencyMs,
    latencyJitterMs: o.latencyJitterMs,
    timeoutMs: o.timeoutMs,
    seed: o.faultSeed,
  };
  return Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
}

/** Ranges are checked with every other fault setting, in one place (`parseFaultUpdate`). */
function number(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number');
  return n;
}

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65_535)
    throw new InvalidArgumentError('must be an integer 0–65535');
  return n;
}

function parseHours(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of hours');
  return n;
}
