/**
 * Checks that every cached tool works (building what is missing first):
 *
 *   node deploy/tools/verify.ts
 *
 * helm is v3.22.0 and defaults to Kubernetes 1.35; kubeconform accepts a good Deployment, rejects a mistyped and
 * an unknown field strictly, and checks a ServiceMonitor and a PrometheusRule against the CRD schemas; promtool
 * accepts good rules and rejects a bad expression; jaeger starts, ingests one OTLP span and lists its service
 * through the query API (skipped when one of its fixed ports is taken, e.g. by a running stack).
 * Exit code 1 when a check fails.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureK8sSchemas, ensureTool, kubeconform } from './tools.ts';

const log = (line: string) => process.stderr.write(`[tools] ${line}\n`);
let failures = 0;
function check(ok: boolean, what: string, detail = ''): void {
  process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${what}${!ok && detail ? `\n${detail.trim()}` : ''}\n`);
  if (!ok) failures++;
}

const deployment = (spec: string) => `apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
${spec}
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: c
          image: demo:1
          ports:
            - containerPort: 8080
`;

const monitoring = (extra: string) => `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: demo
spec:
  selector:
    matchLabels: {app: demo}
  endpoints:
    - port: metrics
      interval: 30s${extra}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: demo
spec:
  groups:
    - name: demo
      rules:
        - alert: DemoDown
          expr: up{job="demo"} == 0
          for: 5m
          labels: {severity: critical}
`;

async function portFree(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function checkJaeger(bin: string, dir: string): Promise<void> {
  const help = spawnSync(bin, ['--help'], { encoding: 'utf8' });
  check(help.status === 0 && help.stdout.includes('Jaeger backend v2'), 'jaeger --help', help.stderr);
  const ports = [4317, 4318, 5778, 5779, 8888, 9411, 13133, 14250, 14268, 16685, 16686, 27777, 27778];
  const busy = [];
  for (const p of ports) if (!(await portFree(p))) busy.push(p);
  if (busy.length) {
    process.stdout.write(`skip jaeger run: port(s) ${busy.join(', ')} in use\n`);
    return;
  }
  const logFile = path.join(dir, 'jaeger.log');
  const child = spawn(bin, [], { stdio: ['ignore', 'ignore', 'ignore'], cwd: dir });
  const started = Date.now();
  try {
    let services: unknown;
    for (let i = 0; i < 60 && services === undefined; i++) {
      await sleep(250);
      try {
        const res = await fetch('http://127.0.0.1:16686/api/services');
        if (res.ok) services = await res.json();
      } catch {}
    }
    check(services !== undefined, `jaeger query API up in ${Date.now() - started} ms`, `see ${logFile}`);
    const now = BigInt(Date.now()) * 1_000_000n;
    const span = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'tools-verify' } }] },
          scopeSpans: [
            {
              spans: [
                {
                  traceId: '5b8efff798038103d269b633813fc60c',
                  spanId: 'eee19b7ec3c1b174',
                  name: 'verify',
                  kind: 1,
                  startTimeUnixNano: String(now - 1_000_000n),
                  endTimeUnixNano: String(now),
                },
              ],
            },
          ],
        },
      ],
    };
    const post = await fetch('http://127.0.0.1:4318/v1/traces', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(span),
    });
    check(post.ok, 'jaeger accepts an OTLP/HTTP span', await post.text());
    let listed = false;
    for (let i = 0; i < 40 && !listed; i++) {
      await sleep(250);
      const body = (await (await fetch('http://127.0.0.1:16686/api/services')).json()) as {
        data: string[] | null;
      };
      listed = body.data?.includes('tools-verify') ?? false;
    }
    check(listed, 'jaeger lists the service in GET /api/services');
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meterline-tools-verify-'));
  try {
    const helm = await ensureTool('helm', { log });
    const kc = await ensureTool('kubeconform', { log });
    await ensureK8sSchemas({ log });
    const promtool = await ensureTool('promtool', { log });
    const jaeger = await ensureTool('jaeger', { log });

    const version = spawnSync(helm, ['version'], { encoding: 'utf8' });
    check(version.stdout.includes('Version:"v3.22.0"'), 'helm version is v3.22.0', version.stdout);
    const chart = path.join(dir, 'chart');
    mkdirSync(path.join(chart, 'templates'), { recursive: true });
    writeFileSync(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: chart\nversion: 0.1.0\n');
    writeFileSync(
      path.join(chart, 'templates', 'cm.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kv\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n',
    );
    const rendered = spawnSync(helm, ['template', chart], { encoding: 'utf8' });
    check(
      rendered.stdout.includes('kube: "v1.35.0"'),
      'helm defaults to Kubernetes v1.35.0',
      rendered.stderr,
    );
    const validRendered = await kubeconform(['-summary', '-'], rendered.stdout);
    check(validRendered.code === 0, 'helm template output passes kubeconform', validRendered.stdout);

    const kcv = spawnSync(kc, ['-v'], { encoding: 'utf8' });
    check(kcv.stdout.includes('v0.7.0'), 'kubeconform -v is v0.7.0');
    const good = await kubeconform(['-summary', '-'], deployment('  replicas: 2'));
    check(good.code === 0, 'kubeconform accepts a good Deployment', good.stdout);
    const mistyped = await kubeconform(['-'], deployment('  replicas: "two"'));
    check(mistyped.code === 1 && /replicas/.test(mistyped.stdout), 'kubeconform rejects replicas: "two"');
    const unknown = await kubeconform(['-'], deployment('  replicas: 2\n  bogusField: true'));
    check(unknown.code === 1 && /bogusField/.test(unknown.stdout), 'kubeconform rejects an unknown field');
    const crds = await kubeconform(['-summary', '-'], monitoring(''));
    check(
      crds.code === 0 && /Valid: 2/.test(crds.stdout),
      'ServiceMonitor + PrometheusRule valid',
      crds.stdout,
    );
    const badCrd = await kubeconform(['-'], monitoring('\n      bogus: 1'));
    check(
      badCrd.code === 1 && /bogus/.test(badCrd.stdout),
      'kubeconform rejects an unknown ServiceMonitor field',
    );

    const pv = spawnSync(promtool, ['--version'], { encoding: 'utf8' });
    check(/promtool, version 3\.16\.0/.test(pv.stdout + pv.stderr), 'promtool --version is 3.16.0');
    const rules = (expr: string) =>
      `groups:\n  - name: demo\n    rules:\n      - alert: Demo\n        expr: ${expr}\n        for: 5m\n`;
    writeFileSync(path.join(dir, 'good-rules.yaml'), rules('rate(http_requests_total[5m]) > 1'));
    writeFileSync(path.join(dir, 'bad-rules.yaml'), rules('rate(http_requests_total[5m) > 1'));
    const pGood = spawnSync(promtool, ['check', 'rules', path.join(dir, 'good-rules.yaml')], {
      encoding: 'utf8',
    });
    check(pGood.status === 0, 'promtool check rules accepts good rules', pGood.stdout + pGood.stderr);
    const pBad = spawnSync(promtool, ['check', 'rules', path.join(dir, 'bad-rules.yaml')], {
      encoding: 'utf8',
    });
    check(pBad.status === 1, 'promtool check rules rejects a bad expression', pBad.stdout + pBad.stderr);

    await checkJaeger(jaeger, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(failures ? `${failures} check(s) failed\n` : 'all checks passed\n');
  process.exitCode = failures ? 1 : 0;
}

await main();
