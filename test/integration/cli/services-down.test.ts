/**
 * Issue 20: every one-shot command, run with its services down (Kafka, Redis, Jaeger, the emulator on
 * closed local ports), ends within its --timeout with the documented exit code, one line on stderr naming
 * the service and the setting to check, and nothing on stdout. Usage and configuration mistakes are
 * refused before anything is contacted, in a short message that points to --help.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { signHandoff } from '../../../src/subscribe/handoff.ts';
import { BIN, type CliResult, cli, closedPort } from '../../support/cli.ts';
import { writeTempJson } from '../../support/harness.ts';

/** The exit codes `meterline --help` documents. */
const EXIT = { ok: 0, failed: 1, usage: 2, unavailable: 3 } as const;
const TIMEOUT = '2s';
/** A process still running this long after its --timeout is killed, and the test fails. */
const HARD_LIMIT_MS = 2_000 + 15_000;
const SECRET = 'x'.repeat(40);

let down: Record<string, string>;
let ports: { kafka: number; redis: number; jaeger: number; emulator: number };

beforeAll(async () => {
  ports = {
    kafka: await closedPort(),
    redis: await closedPort(),
    jaeger: await closedPort(),
    emulator: await closedPort(),
  };
  const plan = writeTempJson('plan.json', { productCode: 'prod-test', dimensions: [{ name: 'api_calls' }] });
  down = {
    KAFKA_BROKERS: `127.0.0.1:${ports.kafka}`,
    REDIS_URL: `redis://127.0.0.1:${ports.redis}`,
    METERLINE_PLAN: plan,
    METERLINE_JAEGER_URL: `http://127.0.0.1:${ports.jaeger}`,
    AWS_ENDPOINT_URL_MARKETPLACE_METERING: `http://127.0.0.1:${ports.emulator}`,
    METERLINE_HANDOFF_SIGNING_SECRET: SECRET,
    SCHEMA_REGISTRY_URL: 'http://127.0.0.1:1',
  };
});

function expectUnavailable(r: CliResult, service: RegExp, setting: string): void {
  const report = JSON.stringify(r);
  expect(r.code, report).toBe(EXIT.unavailable);
  expect(r.stdout, report).toBe('');
  expect(r.stderrLines, report).toHaveLength(1);
  expect(r.stderrLines[0], report).toMatch(service);
  expect(r.stderrLines[0], report).toContain(setting);
}

describe('one-shot commands with their services down', () => {
  const token = () => signHandoff({ productCode: 'prod-test', customerIdentifier: 'c-1' }, 'acme', SECRET);
  const cases: { args: () => string[]; service: RegExp; setting: string }[] = [
    { args: () => ['status'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['status', '-o', 'json'], service: /Redis/, setting: 'REDIS_URL' },
    { args: () => ['customers'], service: /Redis/, setting: 'REDIS_URL' },
    { args: () => ['dlq', 'list'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['dlq', 'inspect', '0:12'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['dlq', 'redrive', '--dry-run'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['produce', '-n', '1'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['reconcile', 'internal'], service: /Kafka/, setting: 'KAFKA_BROKERS' },
    { args: () => ['reconcile', 'gaps'], service: /Redis/, setting: 'REDIS_URL' },
    {
      args: () => [
        'reconcile',
        'aws',
        '--cloudtrail',
        fileURLToPath(new URL('../../fixtures/aws/cloudtrail', import.meta.url)),
      ],
      service: /Redis/,
      setting: 'REDIS_URL',
    },
    {
      args: () => ['trace', '0123456789abcdef0123456789abcdef'],
      service: /Jaeger/,
      setting: 'METERLINE_JAEGER_URL',
    },
    { args: () => ['handoff', 'verify', token()], service: /Redis/, setting: 'REDIS_URL' },
    {
      args: () => ['emulator', 'records'],
      service: /emulator/,
      setting: 'AWS_ENDPOINT_URL_MARKETPLACE_METERING',
    },
  ];
  for (const c of cases) {
    it(`${c.args().slice(0, 2).join(' ')}: one line naming ${c.setting}, exit ${EXIT.unavailable}`, async () => {
      const r = await cli([...c.args(), '--timeout', TIMEOUT], down, { hardLimitMs: HARD_LIMIT_MS });
      expectUnavailable(r, c.service, c.setting);
    });
  }

  it('names only the service that is down', async () => {
    const kafkaUp = { ...down, KAFKA_BROKERS: process.env.KAFKA_BROKERS as string };
    const r = await cli(['status', '--timeout', TIMEOUT], kafkaUp, { hardLimitMs: HARD_LIMIT_MS });
    expectUnavailable(r, /Redis/, 'REDIS_URL');
    expect(r.stderrLines[0]).not.toMatch(/Kafka/);
  });

  it('waits 5s by default (a --timeout without a unit is refused)', async () => {
    const r = await cli(['customers', '--timeout', '2'], down, { hardLimitMs: HARD_LIMIT_MS });
    expect(r.code).toBe(EXIT.usage);
    expect(r.stderr).toMatch(/--timeout.*unit/);
    const help = await cli(['customers', '--help'], down);
    expect(help.stdout).toMatch(/--timeout <duration>.*\(default: "?5s"?\)/s);
  });
});

describe('usage and configuration mistakes', () => {
  it('a bad id is refused before connecting', async () => {
    for (const args of [
      ['dlq', 'inspect', 'notanid'],
      ['trace', 'not a trace'],
    ]) {
      const r = await cli(args, down, { hardLimitMs: HARD_LIMIT_MS });
      expect(r.code, JSON.stringify(r)).toBe(EXIT.usage);
      expect(r.stdout).toBe('');
      expect(r.stderr).not.toMatch(/Kafka|Redis|Jaeger/);
      expect(r.stderr).toContain(`meterline ${args[0]}`);
      expect(r.stderr).toContain('--help');
    }
  });

  it('an unknown option or output format gets a short message pointing to --help, not the whole help', async () => {
    for (const args of [['status', '--bogus'], ['dlq', 'list', '-o', 'xml'], ['nosuchcommand']]) {
      const r = await cli(args, down, { hardLimitMs: HARD_LIMIT_MS });
      expect(r.code, JSON.stringify(r)).toBe(EXIT.usage);
      expect(r.stdout).toBe('');
      expect(r.stderrLines.length, r.stderr).toBeLessThanOrEqual(2);
      expect(r.stderr).toContain('--help');
      expect(r.stderr).not.toContain('Options:');
    }
  });

  it('a forged or expired hand-off token is refused without Redis', async () => {
    const expired = signHandoff({ productCode: 'prod-test', customerIdentifier: 'c-1' }, 'acme', SECRET, {
      nowMs: Date.now() - 3_600_000,
    });
    for (const [token, code] of [
      ['a.b.c', 'handoff_token_invalid'],
      [expired, 'handoff_token_expired'],
    ] as const) {
      const r = await cli(['handoff', 'verify', token, '--timeout', TIMEOUT], down, {
        hardLimitMs: HARD_LIMIT_MS,
      });
      expect(r.code, JSON.stringify(r)).toBe(EXIT.failed);
      expect(r.stdout).toBe('');
      expect(r.stderrLines).toEqual([expect.stringContaining(code)]);
    }
  });

  it('a broker without a port is refused by name, before connecting', async () => {
    const r = await cli(['status'], { ...down, KAFKA_BROKERS: 'broker' }, { hardLimitMs: HARD_LIMIT_MS });
    expect(r.code).toBe(EXIT.usage);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('KAFKA_BROKERS: "broker" has no port');
  });

  it('an unknown METERLINE_* variable is warned about, with a did-you-mean', async () => {
    const r = await cli(['status', '--timeout', TIMEOUT], { ...down, METERLINE_REDIS_PREFX: 'x' });
    expect(r.stderr).toContain(
      'METERLINE_REDIS_PREFX is not a meterline setting (did you mean METERLINE_REDIS_PREFIX?)',
    );
  });
});

describe('help and version', () => {
  it('--version prints the package version and the build', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    for (const args of [['--version'], ['-V']]) {
      const r = await cli(args, down);
      expect(r.code).toBe(EXIT.ok);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^meterline ${pkg.version.replaceAll('.', '\\.')} \\(.*node v24`));
    }
  });

  it('the main help documents the exit codes; every command has examples', async () => {
    const main = await cli(['--help'], down);
    expect(main.code).toBe(EXIT.ok);
    expect(main.stdout).toMatch(/Exit codes:[\s\S]*\b0\b[\s\S]*\b2\b[\s\S]*\b3\b/);
    for (const command of [
      'run',
      'processor',
      'worker',
      'registration',
      'produce',
      'status',
      'customers',
      'trace',
      'dlq list',
      'dlq inspect',
      'dlq redrive',
      'emulator',
      'emulator records',
      'handoff verify',
      'reconcile internal',
      'reconcile aws',
      'reconcile gaps',
    ]) {
      const r = await cli([...command.split(' '), '--help'], down);
      expect(r.code, command).toBe(EXIT.ok);
      expect(r.stdout, command).toContain('Examples:');
      expect(r.stdout, command).toContain(`$ meterline ${command}`);
    }
  });
});

describe('an unsupported Node', () => {
  // The system's Node, when it is older than 24 (Debian's is 20): it cannot even load a .ts file.
  const system = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => {
    try {
      return readFileSync(p).length > 0;
    } catch {
      return false;
    }
  });
  it.skipIf(!system)('gets one line saying which Node to use', async () => {
    const major = Number(
      execFileSync(system as string, ['-p', 'process.versions.node'], { encoding: 'utf8' }).split('.')[0],
    );
    if (major >= 24) return;
    const r = await cli(['status'], down, { node: system, entry: BIN });
    expect(r.code).toBe(EXIT.usage);
    expect(r.stdout).toBe('');
    expect(r.stderrLines).toEqual([
      expect.stringMatching(/^meterline needs Node\.js 24 .*this is Node\.js v\d+.*/),
    ]);
  });
});
