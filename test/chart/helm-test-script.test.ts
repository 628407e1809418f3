/**
 * The script of the chart's `helm test` Pod (deploy/image/helm-test.ts), run as the Pod runs it (a child
 * process, configured by its arguments and the release's environment) against the local stack's Kafka and
 * Redis and a small HTTP server standing in for the roles' health endpoints.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serviceUrl } from '../../deploy/image/helm-test.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = path.join(ROOT, 'deploy/image/helm-test.ts');
let server: Server;
let base: string;

function helmTest(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; out: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [SCRIPT, ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, out: stdout + stderr, ms: Date.now() - started });
      },
    );
  });
}

const stackEnv = () => ({
  KAFKA_BROKERS: process.env.KAFKA_BROKERS ?? '',
  REDIS_URL: process.env.REDIS_URL ?? '',
  REDIS_CLUSTER: 'false',
});

beforeAll(async () => {
  server = createServer((req, res) => {
    res.statusCode = req.url === '/readyz' ? 200 : 503;
    res.end(res.statusCode === 200 ? 'ok' : 'not ready');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe('the helm test script', () => {
  it('passes when every role is ready and Kafka and Redis answer, one line per check', async () => {
    const r = await helmTest(
      [`--health=processor=${base}/readyz`, `--health=worker=${base}/readyz`, '--timeout=20s'],
      stackEnv(),
    );
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/^ok {3}processor health: .*answered 200$/m);
    expect(r.out).toMatch(/^ok {3}worker health: .*answered 200$/m);
    expect(r.out).toMatch(/^ok {3}kafka: \d+ broker\(s\)/m);
    expect(r.out).toMatch(/^ok {3}redis: .* answered PONG$/m);
    expect(r.out).toContain('helm test: all 4 checks passed');
  });

  it('fails naming each check that failed: a role not ready, Kafka and Redis not answering; never prints a password', async () => {
    const r = await helmTest(
      [`--health=processor=${base}/readyz`, `--health=worker=${base}/not-ready`, '--timeout=4s'],
      {
        KAFKA_BROKERS: '127.0.0.1:1',
        REDIS_URL: 'redis://meterline:s3cret-pass@127.0.0.1:1',
        REDIS_CLUSTER: 'false',
      },
    );
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/^ok {3}processor health/m);
    expect(r.out).toMatch(/^FAIL worker health: .*answered 503$/m);
    expect(r.out).toMatch(/^FAIL kafka: 127\.0\.0\.1:1: /m);
    expect(r.out).toMatch(/^FAIL redis: redis:\/\/\*\*\*@127\.0\.0\.1:1: /m);
    expect(r.out).toContain('helm test: 3 of 4 checks failed');
    expect(r.out).not.toContain('s3cret-pass');
    // Every check ends by the timeout, however long the clients would retry.
    expect(r.ms).toBeLessThan(20_000);
  });

  it('reaches a Service by its cluster name through <SERVICE>_SERVICE_HOST, with no cluster DNS', async () => {
    const port = new URL(base).port;
    const r = await helmTest(
      [`--health=worker=http://ml-meterline-worker-metrics.metering.svc:${port}/readyz`, '--timeout=20s'],
      { ...stackEnv(), ML_METERLINE_WORKER_METRICS_SERVICE_HOST: '127.0.0.1' },
    );
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`ok   worker health: http://127.0.0.1:${port}/readyz answered 200`);
    expect(
      serviceUrl('http://ml-meterline-worker-metrics.metering.svc.cluster.local:9464/readyz', {
        ML_METERLINE_WORKER_METRICS_SERVICE_HOST: 'fd00::10',
      }),
    ).toBe('http://[fd00::10]:9464/readyz');
    // Without the variable, or for a name that is not a Service's, the URL stays as it is.
    expect(serviceUrl('http://ml-meterline-worker-metrics.metering.svc:9464/readyz', {})).toBe(
      'http://ml-meterline-worker-metrics.metering.svc:9464/readyz',
    );
    expect(serviceUrl('http://10.0.0.1:9464/readyz', { X_SERVICE_HOST: '1.2.3.4' })).toBe(
      'http://10.0.0.1:9464/readyz',
    );
  });

  it('refuses bad arguments with exit 2; --no-health checks only Kafka and Redis', async () => {
    expect((await helmTest(['--timeout=20s'], stackEnv())).code).toBe(2);
    expect((await helmTest(['--health=nourl', '--timeout=20s'], stackEnv())).code).toBe(2);
    const r = await helmTest(['--no-health', '--timeout=20s'], stackEnv());
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('helm test: all 2 checks passed');
  });
});
