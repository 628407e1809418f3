/** `meterline emulator` and `meterline emulator records`, run as real processes. */
import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BatchMeterUsageCommand } from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorSnapshot } from '../../src/emulator/state.ts';
import { LICENSE, sdkClient } from './helpers.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
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
  child = spawn(process.execPath, [
    MAIN,
    'emulator',
    '--port',
    '0',
    '--customers',
    customers,
    '--subscribe',
    '555',
  ]);
  url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /emulator listening on (http:\/\/\S+)/.exec(out);
      if (match?.[1]) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`emulator exited early (${code})`)));
  });
}, 20_000);

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
              LicenseArn: LICENSE,
              Dimension: 'd',
              Quantity: 5,
            },
            {
              Timestamp: new Date(now),
              CustomerAWSAccountId: '666',
              LicenseArn: LICENSE,
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

  it('stops cleanly on SIGTERM', async () => {
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
  });
});
