/** `meterline emulator` and `meterline emulator records`, run as real processes. */
import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  BatchMeterUsageCommand,
  InternalServiceErrorException,
  ThrottlingException,
} from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorSnapshot } from '../../../src/emulator/emulator-types.ts';
import { LICENSE, rejection, sdkClient } from '../../support/emulator.ts';

const MAIN = new URL('../../../src/cli/main.ts', import.meta.url).pathname;
const run = promisify(execFile);

let dir: string;
let child: ChildProcessWithoutNullStreams;
let url: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meterline-emulator-'));
  const customers = join(dir, 'customers.json');
  await writeFile(
    customers,
    JSON.stringify({
      acme: { customerAwsAccountId: '123456789012', licenseArn: LICENSE },
      globex: { customerIdentifier: 'abc', productCode: 'prod-x' },
    }),
  );
  ({ child, url } = await startCli(['--customers', customers, '--subscribe', '555']));
}, 20_000);

/** Spawns `meterline emulator --port 0 …args` and waits for the URL it prints. */
async function startCli(args: string[]): Promise<{ child: ChildProcessWithoutNullStreams; url: string }> {
  const proc = spawn(process.execPath, [MAIN, 'emulator', '--port', '0', ...args]);
  const printed = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /emulator listening on (http:\/\/\S+)/.exec(out);
      if (match?.[1]) resolve(match[1]);
    });
    proc.once('exit', (code) => reject(new Error(`emulator exited early (${code})`)));
  });
  return { child: proc, url: printed };
}

afterAll(async () => {
  if (child.exitCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('meterline emulator', () => {
  it('serves the SDK with the customers from --customers and --subscribe', async () => {
    const client = sdkClient(url);
    const now = Date.now();
    try {
      const out = await client.send(
        new BatchMeterUsageCommand({
          ProductCode: 'prod-x',
          UsageRecords: [
            {
              Timestamp: new Date(now),
              CustomerAWSAccountId: '123456789012',
              LicenseArn: LICENSE,
              Dimension: 'd',
              Quantity: 3,
            },
            { Timestamp: new Date(now), CustomerIdentifier: 'abc', Dimension: 'd', Quantity: 4 },
            {
              Timestamp: new Date(now),
              CustomerAWSAccountId: '555',
              // Each buyer has its own license: one granted to acme would be refused for anyone else.
              LicenseArn: `${LICENSE}5`,
              Dimension: 'd',
              Quantity: 5,
            },
            {
              Timestamp: new Date(now),
              CustomerAWSAccountId: '666',
              LicenseArn: `${LICENSE}6`,
              Dimension: 'd',
              Quantity: 6,
            },
          ],
        }),
      );
      expect(out.Results?.map((r) => r.Status)).toEqual([
        'Success',
        'Success',
        'Success',
        'CustomerNotSubscribed',
      ]);
    } finally {
      client.destroy();
    }
  });

  it('`records --json` prints the snapshot; the table shows each record', async () => {
    const json = await run(process.execPath, [MAIN, 'emulator', 'records', '--endpoint', url, '--json']);
    const snapshot = JSON.parse(json.stdout) as EmulatorSnapshot;
    expect(snapshot.records.map((r) => r.quantity)).toEqual([3, 4, 5]);

    const table = await run(process.execPath, [MAIN, 'emulator', 'records'], {
      env: { ...process.env, AWS_ENDPOINT_URL_MARKETPLACE_METERING: url },
    });
    for (const r of snapshot.records) {
      expect(table.stdout).toContain(r.meteringRecordId);
      expect(table.stdout).toContain(r.timestamp);
    }
    expect(table.stdout).toContain('BatchMeterUsage');
    expect(table.stdout).toContain('3 record(s), 0 duplicate(s)');
  });

  it('enforces the 10 TPS quota by default, with no faults, and `records` reports the throttling', async () => {
    const res = await fetch(`${url}/_emulator/faults`);
    expect(await res.json()).toMatchObject({ tps: 10, throttleRate: 0, errorRate: 0, timeoutRate: 0 });
    const client = sdkClient(url);
    try {
      // An unsubscribed customer: throttled or CustomerNotSubscribed, never a new record.
      const call = () =>
        client
          .send(
            new BatchMeterUsageCommand({
              ProductCode: 'prod-x',
              UsageRecords: [{ Timestamp: new Date(), CustomerIdentifier: 'nobody', Dimension: 'd' }],
            }),
          )
          .then(
            () => 'ok',
            (error: unknown) => (error instanceof ThrottlingException ? 'throttled' : String(error)),
          );
      const started = performance.now();
      const outcomes = await Promise.all(Array.from({ length: 25 }, call));
      const elapsedMs = performance.now() - started;
      expect(
        outcomes.filter((o) => o === 'ok').length + outcomes.filter((o) => o === 'throttled').length,
      ).toBe(25);
      // 10 at once, then one more per 100 ms the burst took to arrive (usually a few ms).
      const throttled = outcomes.filter((o) => o === 'throttled').length;
      expect(throttled).toBeGreaterThan(0);
      expect(throttled).toBeGreaterThanOrEqual(25 - 10 - Math.ceil(elapsedMs / 100));
    } finally {
      client.destroy();
    }
    const table = await run(process.execPath, [MAIN, 'emulator', 'records', '--endpoint', url]);
    expect(table.stdout).toMatch(/throttled by quota: BatchMeterUsage=\d+; injected faults: none/);
  });

  it('stops cleanly on SIGTERM', async () => {
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
  });
});

describe('meterline emulator fault flags', () => {
  it('sets the quota and fault rates from flags', async () => {
    const flagged = await startCli([
      '--tps',
      '0',
      '--error-rate',
      '1',
      '--latency-ms',
      '5',
      '--timeout-ms',
      '1000',
      '--fault-seed',
      '9',
    ]);
    const client = sdkClient(flagged.url);
    try {
      const res = await fetch(`${flagged.url}/_emulator/faults`);
      expect(await res.json()).toEqual({
        tps: 0,
        throttleRate: 0,
        errorRate: 1,
        timeoutRate: 0,
        unprocessedRate: 0,
        latencyMs: 5,
        latencyJitterMs: 0,
        timeoutMs: 1000,
        seed: 9,
      });
      const error = await rejection(
        client.send(
          new BatchMeterUsageCommand({
            ProductCode: 'prod-x',
            UsageRecords: [{ Timestamp: new Date(), CustomerIdentifier: 'abc', Dimension: 'd' }],
          }),
        ),
      );
      expect(error).toBeInstanceOf(InternalServiceErrorException);
    } finally {
      client.destroy();
      flagged.child.kill('SIGTERM');
      await once(flagged.child, 'exit');
    }
  });

  it('refuses out-of-range or non-numeric fault flags, saying why', async () => {
    const failure = (args: string[]) =>
      run(process.execPath, [MAIN, 'emulator', '--port', '0', ...args]).then(
        () => {
          throw new Error(`meterline emulator ${args.join(' ')} started`);
        },
        (error: { code: number; stderr: string }) => error,
      );
    const [range, sum, nan] = await Promise.all([
      failure(['--throttle-rate', '1.5', '--tps', '-1']),
      failure(['--error-rate', '0.6', '--timeout-rate', '0.6']),
      failure(['--latency-ms', 'soon']),
    ]);
    // Usage errors: exit 2, as `meterline --help` documents.
    expect(range.code).toBe(2);
    expect(range.stderr).toContain('throttleRate must be a number from 0 to 1 (got 1.5)');
    expect(range.stderr).toContain('tps must be a non-negative number');
    expect(sum.stderr).toContain('throttleRate + errorRate + timeoutRate must be at most 1');
    expect(nan.code).toBe(2);
    expect(nan.stderr).toMatch(/--latency-ms <ms>' argument 'soon' is invalid\. must be a number/);
  });
});
