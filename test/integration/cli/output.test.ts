/**
 * Issue 20: every command that prints data takes `-o table|json|yaml`; JSON and YAML parse (to the same
 * data), piped tables are plain columns with no box characters, and NO_COLOR turns colours off on a
 * terminal. Run against the real broker, Redis and emulator, each with this test's own topics and prefix.
 */
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { dlqMessage, type FailedRecord } from '../../../src/metering/dlq-envelope.ts';
import { makeSubmissionRecord } from '../../../src/metering/submission-record.ts';
import type { JaegerTrace } from '../../../src/observability/jaeger-client.ts';
import { signHandoff } from '../../../src/subscribe/handoff.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { BOX, cli, MAIN } from '../../support/cli.ts';
import { testKafka } from '../../support/harness.ts';
import { awsIdOf, type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();
const SECRET = 'y'.repeat(40);
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
let tp: TestPipeline;
let emulator: RunningEmulator;
let jaeger: Server;
let env: Record<string, string>;

/** A Jaeger query API that knows one trace: a finalize span and its worker child. */
function jaegerStub(): Promise<Server> {
  const t0 = Date.now() * 1000;
  const trace: JaegerTrace = {
    traceID: TRACE_ID,
    processes: { p1: { serviceName: 'meterline-processor' }, p2: { serviceName: 'meterline-worker' } },
    spans: [
      {
        traceID: TRACE_ID,
        spanID: 'a1',
        operationName: 'finalize hour',
        references: [],
        startTime: t0,
        duration: 2_000,
        tags: [{ key: 'meterline.records', type: 'int64', value: 1 }],
        processID: 'p1',
      },
      {
        traceID: TRACE_ID,
        spanID: 'b2',
        operationName: 'BatchMeterUsage',
        references: [{ refType: 'CHILD_OF', traceID: TRACE_ID, spanID: 'a1' }],
        startTime: t0 + 1_000,
        duration: 500,
        tags: [],
        processID: 'p2',
      },
    ],
  };
  const server = createServer((req, res) => {
    const found = req.url === `/api/traces/${TRACE_ID}`;
    res.writeHead(found ? 200 : 404, { 'content-type': 'application/json' });
    res.end(found ? JSON.stringify({ data: [trace] }) : '{}');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

beforeAll(async () => {
  emulator = await startEmulator({ customers: [awsIdOf('acme')] });
  jaeger = await jaegerStub();
  tp = testPipeline('cli-output', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
  await tp.createTopics(kafka);
  env = {
    ...tp.env,
    METERLINE_JAEGER_URL: `http://127.0.0.1:${(jaeger.address() as AddressInfo).port}`,
    METERLINE_HANDOFF_SIGNING_SECRET: SECRET,
    LOG_LEVEL: 'warn',
    OTEL_SDK_DISABLED: 'true',
  };
  // One failed record on the test's failed-records topic: a submission AWS refused.
  const hourMs = hourStart(Date.now()) - HOUR_MS;
  const failed: FailedRecord = {
    version: 1,
    stage: 'submit',
    reason: 'customer_not_subscribed',
    detail: 'the customer is not subscribed to the product',
    retriable: false,
    failedAt: new Date().toISOString(),
    record: makeSubmissionRecord({
      productCode: 'prod-test',
      customer: 'globex',
      dimension: 'api_calls',
      hourMs,
      quantity: 7,
      api: 'BatchMeterUsage',
      finalizedAtMs: Date.now(),
    }),
    deadline: new Date(hourMs + 24 * HOUR_MS).toISOString(),
  };
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: tp.topics.failed, messages: [dlqMessage(failed)] });
  await producer.disconnect();
}, 120_000);

afterAll(async () => {
  await tp?.cleanup(kafka);
  await emulator?.close();
  await new Promise((resolve) => jaeger?.close(resolve));
});

/** Each data command, as a function so that a command that spends its input (a token) gets a fresh one. */
const COMMANDS: Record<string, () => string[]> = {
  produce: () => ['produce', '-n', '20', '--customers', 'acme', '--hours', '1'],
  status: () => ['status'],
  customers: () => ['customers'],
  'dlq list': () => ['dlq', 'list'],
  'dlq inspect': () => ['dlq', 'inspect', '0:0'],
  'dlq redrive': () => ['dlq', 'redrive', '--dry-run'],
  trace: () => ['trace', TRACE_ID],
  'emulator records': () => ['emulator', 'records'],
  'handoff verify': () => [
    'handoff',
    'verify',
    signHandoff({ productCode: 'prod-test', customerIdentifier: 'c-1' }, 'acme', SECRET),
  ],
};

const HAD_JSON = ['status', 'customers', 'dlq list', 'trace', 'emulator records'];

describe('-o json | yaml | table on every data command', () => {
  for (const [name, args] of Object.entries(COMMANDS)) {
    it(name, async () => {
      const json = await cli([...args(), '-o', 'json'], env);
      expect(json.code, json.stderr).toBe(0);
      const data = JSON.parse(json.stdout) as unknown;
      expect(data).toBeTruthy();
      // --json, where a command had it before -o, is the same as -o json.
      if (HAD_JSON.includes(name)) {
        const alias = await cli([...args(), '--json'], env);
        expect(alias.code, alias.stderr).toBe(0);
        expect(typeof JSON.parse(alias.stdout)).toBe(typeof data);
      }

      const yaml = await cli([...args(), '-o', 'yaml'], env);
      expect(yaml.code, yaml.stderr).toBe(0);
      const fromYaml = parseYaml(yaml.stdout) as unknown;
      expect(typeof fromYaml).toBe(typeof data);
      expect(Array.isArray(fromYaml)).toBe(Array.isArray(data));

      const table = await cli([...args(), '-o', 'table'], env);
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout.trim()).not.toBe('');
      expect(table.stdout, table.stdout).not.toMatch(BOX);
      // Logs stay off stdout: nothing there looks like a pino line.
      for (const out of [json.stdout, yaml.stdout, table.stdout]) expect(out).not.toMatch(/"level":\d+/);
    });
  }

  it('the data says what the table says', async () => {
    const list = JSON.parse((await cli(['dlq', 'list', '-o', 'json'], env)).stdout) as {
      id: string;
      reason: string;
      redriven: boolean;
    }[];
    expect(list).toEqual([
      expect.objectContaining({ id: '0:0', reason: 'customer_not_subscribed', redriven: false }),
    ]);
    const table = (await cli(['dlq', 'list'], env)).stdout.split('\n');
    expect(table[0]).toMatch(/^id\s+failed at\s+stage\s+reason\s+what\s+redriven$/);
    expect(table[1]).toMatch(/^0:0\s+\S+\s+submit\s+customer_not_subscribed\s+globex api_calls /);
    const customers = JSON.parse((await cli(['customers', '-o', 'json'], env)).stdout) as {
      tenant: string;
    }[];
    expect(customers.map((c) => c.tenant)).toEqual(['acme', 'globex', 'initech', 'umbrella']);
  });
});

describe('on a terminal', () => {
  // `script` gives the child a pseudo-terminal, as an operator's shell would: without the CI runner's
  // CI variable, which turns colours off by convention (supports-color).
  const onTty = (extra: Record<string, string>) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env, ...extra };
    delete childEnv.CI;
    return execFileSync(
      'script',
      [
        '-qec',
        `'${process.execPath}' --disable-warning=TimeoutNegativeWarning '${MAIN}' customers`,
        '/dev/null',
      ],
      { env: childEnv, encoding: 'utf8' },
    );
  };
  const hasScript = (() => {
    try {
      execFileSync('script', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!hasScript)('tables have borders; colours unless NO_COLOR', () => {
    const coloured = onTty({ TERM: 'xterm-256color' });
    expect(coloured).toMatch(BOX);
    expect(coloured).toContain('\u001b[');
    const plain = onTty({ TERM: 'xterm-256color', NO_COLOR: '1' });
    expect(plain).toMatch(BOX);
    expect(plain).not.toContain('\u001b[');
  });
});
