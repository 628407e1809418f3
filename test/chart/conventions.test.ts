/**
 * The chart's fit with the Helm ecosystem (issue 21): it renders as a subchart of a parent chart with `global`
 * values; the usual extension values (extraEnv, extraEnvFrom, extraVolumes, extraVolumeMounts,
 * topologySpreadConstraints, priorityClassName, probe tuning) per role; the ServiceMonitor's namespace, labels
 * and relabelings; Chart.yaml's metadata and `helm package`; short NOTES; and the `helm test` pod, which checks
 * each role's health, Kafka and Redis from the chart's own image. Every render here also passes kubeconform.
 * (The `helm test` pod itself runs in the cluster test, npm run test:cluster; its script runs against the local
 * stack in test/chart/helm-test-script.test.ts.)
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { ensureK8sSchemas, ensureTool, KUBERNETES_VERSION, kubeconform } from '../../deploy/tools/tools.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHART = path.join(ROOT, 'helm/meterline');
const VALUES = path.join(ROOT, 'test/chart/values');
const COLD_BUILD_MS = 20 * 60_000;
const ROLES = ['processor', 'worker', 'registration'] as const;

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects are walked as plain data.
type Obj = Record<string, any>;

let helm: string;
let tmp: string;

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const template = (chart: string, args: string[]) =>
  run(helm, [
    'template',
    'ml',
    chart,
    '--namespace',
    'metering',
    '--kube-version',
    KUBERNETES_VERSION,
    ...args,
  ]);

const objectsOf = (text: string): Obj[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null && typeof o === 'object');

async function render(args: string[], chart = CHART): Promise<Obj[]> {
  const r = await template(chart, args);
  expect(r.code, r.stderr).toBe(0);
  return objectsOf(r.stdout);
}

/** kubeconform (strict, Kubernetes 1.35 + prometheus-operator CRDs) finds every object valid. */
async function expectValid(objects: Obj[]): Promise<void> {
  const text = objects.map((o) => `---\n${stringify(o)}`).join('');
  const r = await kubeconform(['-summary', '-output', 'json', '-'], text);
  const report = JSON.parse(r.stdout) as {
    resources: { kind: string; name: string; status: string; msg: string }[];
    summary: { valid: number; invalid: number; errors: number; skipped: number };
  };
  const notValid = (report.resources ?? []).filter((res) => res.status !== 'statusValid');
  expect(notValid, JSON.stringify(notValid, null, 2)).toEqual([]);
  expect(report.summary).toEqual({ valid: objects.length, invalid: 0, errors: 0, skipped: 0 });
}

const find = (objects: Obj[], kind: string, name: string): Obj => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};

const full = ['-f', path.join(VALUES, 'full.yaml')];
const withExtensions = [...full, '-f', path.join(VALUES, 'extensions.yaml')];
const extensions = parse(readFileSync(path.join(VALUES, 'extensions.yaml'), 'utf8'));
const chartValues = parse(readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));

beforeAll(async () => {
  const log = (line: string) => process.stderr.write(`[chart conventions] ${line}\n`);
  helm = await ensureTool('helm', { log });
  await ensureTool('kubeconform', { log });
  await ensureK8sSchemas({ log });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'meterline-chart-conventions-'));
}, COLD_BUILD_MS);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('as a subchart', () => {
  /** A parent chart with meterline under charts/, its values under `meterline:` and `global` values. */
  function parentChart(): string {
    const parent = path.join(tmp, 'billing-platform');
    rmSync(parent, { recursive: true, force: true });
    mkdirSync(path.join(parent, 'charts'), { recursive: true });
    mkdirSync(path.join(parent, 'templates'));
    cpSync(CHART, path.join(parent, 'charts', 'meterline'), { recursive: true });
    writeFileSync(
      path.join(parent, 'Chart.yaml'),
      stringify({
        apiVersion: 'v2',
        name: 'billing-platform',
        version: '1.0.0',
        dependencies: [{ name: 'meterline', version: '0.1.0', condition: 'meterline.enabled' }],
      }),
    );
    writeFileSync(
      path.join(parent, 'templates', 'configmap.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-platform\ndata:\n  team: {{ .Values.global.team | quote }}\n',
    );
    const minimal = parse(readFileSync(path.join(VALUES, 'minimal.yaml'), 'utf8'));
    writeFileSync(
      path.join(parent, 'values.yaml'),
      stringify({
        global: {
          team: 'billing',
          imagePullSecrets: [{ name: 'platform-pull' }],
          monitoring: { enabled: true },
        },
        meterline: { enabled: true, ...minimal },
      }),
    );
    return parent;
  }

  it('renders with the parent chart’s global values, and every object is valid', async () => {
    const parent = parentChart();
    const objects = await render([], parent);
    expect(find(objects, 'ConfigMap', 'ml-platform').data.team).toBe('billing');
    const deployments = objects.filter((o) => o.kind === 'Deployment').map((o) => o.metadata.name);
    expect(deployments.sort()).toEqual(['ml-meterline-processor', 'ml-meterline-worker']);
    // global.imagePullSecrets, the common convention, reaches every pod of the chart (the helm test pod's too).
    for (const o of objects.filter((x) => x.kind === 'Deployment' || x.kind === 'Pod')) {
      const pod = o.kind === 'Pod' ? o.spec : o.spec.template.spec;
      expect(pod.imagePullSecrets, `${o.kind} ${o.metadata.name}`).toEqual([{ name: 'platform-pull' }]);
    }
    await expectValid(objects);
  });

  it('its own imagePullSecrets and the global ones add up, without duplicates', async () => {
    const parent = parentChart();
    const objects = await render(
      [
        '--set',
        'meterline.imagePullSecrets[0].name=regcred',
        '--set',
        'meterline.imagePullSecrets[1].name=platform-pull',
      ],
      parent,
    );
    const pod = find(objects, 'Deployment', 'ml-meterline-worker').spec.template.spec;
    expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }, { name: 'platform-pull' }]);
  });

  it('standalone, the schema takes any global value and still refuses unknown keys elsewhere', async () => {
    const minimal = ['-f', path.join(VALUES, 'minimal.yaml')];
    await render([...minimal, '--set', 'global.anything=1', '--set', 'global.nested.deeper=x']);
    const r = await template(CHART, [...minimal, '--set', 'globals.anything=1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('globals');
  });
});

describe('extension values on every role', () => {
  let objects: Obj[];
  beforeAll(async () => {
    objects = await render(withExtensions);
  });

  it('every rendered object is valid', async () => {
    await expectValid(objects);
  });

  it.each(ROLES)('%s: extraEnv and extraEnvFrom come after the chart’s own', (role) => {
    const pod = find(objects, 'Deployment', `ml-meterline-${role}`).spec.template.spec;
    const c = pod.containers[0];
    const extraEnv: Obj[] = extensions[role].extraEnv ?? [];
    const extraEnvFrom: Obj[] = extensions[role].extraEnvFrom ?? [];
    expect(c.env.slice(c.env.length - extraEnv.length)).toEqual(extraEnv);
    expect(c.env.length).toBeGreaterThan(extraEnv.length);
    expect(c.envFrom[0]).toEqual({ configMapRef: { name: 'ml-meterline-config' } });
    expect(c.envFrom.slice(1)).toEqual(extraEnvFrom);
  });

  it.each(ROLES)('%s: extraVolumes and extraVolumeMounts are added to the chart’s own', (role) => {
    const pod = find(objects, 'Deployment', `ml-meterline-${role}`).spec.template.spec;
    const c = pod.containers[0];
    const volumes: Obj[] = extensions[role].extraVolumes ?? [];
    const mounts: Obj[] = extensions[role].extraVolumeMounts ?? [];
    expect(pod.volumes.slice(pod.volumes.length - volumes.length)).toEqual(volumes);
    expect(c.volumeMounts.slice(c.volumeMounts.length - mounts.length)).toEqual(mounts);
    // The chart's own stay: /tmp and the files.
    expect(c.volumeMounts.map((m: Obj) => m.mountPath)).toEqual(
      expect.arrayContaining(['/tmp', '/etc/meterline']),
    );
  });

  it.each(ROLES)(
    '%s: priorityClassName, and topologySpreadConstraints select the role’s pods unless told',
    (role) => {
      const pod = find(objects, 'Deployment', `ml-meterline-${role}`).spec.template.spec;
      expect(pod.priorityClassName).toBe(extensions[role].priorityClassName);
      const given: Obj[] = extensions[role].topologySpreadConstraints ?? [];
      if (!given.length) {
        expect(pod.topologySpreadConstraints).toBeUndefined();
        return;
      }
      expect(pod.topologySpreadConstraints).toHaveLength(given.length);
      given.forEach((constraint, i) => {
        const out = pod.topologySpreadConstraints[i];
        expect(out).toMatchObject({ ...constraint, labelSelector: expect.anything() });
        expect(out.labelSelector).toEqual(
          constraint.labelSelector ?? {
            matchLabels: {
              'app.kubernetes.io/name': 'meterline',
              'app.kubernetes.io/instance': 'ml',
              'app.kubernetes.io/component': role,
            },
          },
        );
      });
    },
  );

  it.each(ROLES)('%s: probes are tuned per role; untouched ones keep the defaults', (role) => {
    const c = find(objects, 'Deployment', `ml-meterline-${role}`).spec.template.spec.containers[0];
    for (const probe of ['startup', 'liveness', 'readiness'] as const) {
      const expected = extensions[role].probes?.[probe] ?? chartValues[role].probes[probe];
      expect(c[`${probe}Probe`], `${role} ${probe}`).toEqual({
        httpGet: { path: probe === 'readiness' ? '/readyz' : '/healthz', port: 'metrics' },
        ...expected,
      });
    }
  });

  it('the default probes are the ones the chart always had', async () => {
    const c = find(await render(full), 'Deployment', 'ml-meterline-worker').spec.template.spec.containers[0];
    expect(c.startupProbe).toEqual({
      httpGet: { path: '/healthz', port: 'metrics' },
      initialDelaySeconds: 0,
      periodSeconds: 5,
      timeoutSeconds: 1,
      failureThreshold: 36,
    });
    expect(c.livenessProbe).toMatchObject({ periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 });
    expect(c.readinessProbe).toMatchObject({ periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2 });
  });

  it('without extension values, none of their fields appear', async () => {
    for (const d of (await render(full)).filter((o) => o.kind === 'Deployment')) {
      const pod = d.spec.template.spec;
      expect(pod.priorityClassName).toBeUndefined();
      expect(pod.topologySpreadConstraints).toBeUndefined();
      expect(pod.containers[0].envFrom).toHaveLength(1);
    }
  });
});

describe('ServiceMonitor', () => {
  it('takes a namespace, labels, relabelings and metricRelabelings, and still scrapes the release’s namespace', async () => {
    const sm = find(await render(withExtensions), 'ServiceMonitor', 'ml-meterline');
    expect(sm.metadata.namespace).toBe('monitoring');
    expect(sm.metadata.labels.release).toBe('kube-prometheus-stack');
    expect(sm.spec.namespaceSelector).toEqual({ matchNames: ['metering'] });
    expect(sm.spec.endpoints).toHaveLength(1);
    expect(sm.spec.endpoints[0].relabelings).toEqual(extensions.metrics.serviceMonitor.relabelings);
    expect(sm.spec.endpoints[0].metricRelabelings).toEqual(
      extensions.metrics.serviceMonitor.metricRelabelings,
    );
  });

  it('by default lives in the release’s namespace, without relabelings', async () => {
    const sm = find(await render(full), 'ServiceMonitor', 'ml-meterline');
    expect(sm.metadata.namespace).toBeUndefined();
    expect(sm.spec.endpoints[0].relabelings).toBeUndefined();
    expect(sm.spec.endpoints[0].metricRelabelings).toBeUndefined();
  });
});

describe('Chart.yaml and helm package', () => {
  it('has the metadata chart repositories and Artifact Hub show', () => {
    const chart = parse(readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8'));
    expect(chart.apiVersion).toBe('v2');
    expect(chart.home).toMatch(/^https:\/\//);
    expect(chart.sources.length).toBeGreaterThan(0);
    for (const s of chart.sources) expect(s).toMatch(/^https:\/\//);
    expect(chart.maintainers.length).toBeGreaterThan(0);
    for (const m of chart.maintainers) expect(m.name).toBeTruthy();
    expect(chart.keywords).toEqual(expect.arrayContaining(['aws-marketplace', 'metering', 'kafka', 'redis']));
    expect(chart.appVersion).toBe(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  });

  it('helm package makes meterline-<version>.tgz with the schema, the tests and the README, and without dev files', async () => {
    const out = path.join(tmp, 'package');
    const r = await run(helm, ['package', CHART, '--destination', out]);
    expect(r.code, r.stderr).toBe(0);
    const tgz = path.join(out, 'meterline-0.1.0.tgz');
    expect(r.stdout).toContain(tgz);
    const list = await run('tar', ['-tzf', tgz]);
    const files = list.stdout.split('\n').filter(Boolean);
    expect(files).toEqual(
      expect.arrayContaining([
        'meterline/Chart.yaml',
        'meterline/values.yaml',
        'meterline/values.schema.json',
        'meterline/README.md',
        'meterline/templates/NOTES.txt',
        'meterline/templates/tests/helm-test.yaml',
        'meterline/files/alert-rules.yaml',
      ]),
    );
    expect(files).not.toContain('meterline/biome.json');
  });

  it('the README shows helm package and an OCI push, with the commands that install from it', () => {
    const readme = readFileSync(path.join(CHART, 'README.md'), 'utf8');
    expect(readme).toContain('helm package helm/meterline');
    expect(readme).toMatch(/helm push meterline-0\.1\.0\.tgz oci:\/\//);
    expect(readme).toMatch(/helm install meterline oci:\/\/\S+\/meterline --version 0\.1\.0/);
    expect(readme).toContain('helm registry login');
    expect(readme).toContain('helm test meterline');
  });
});

describe('NOTES.txt', () => {
  /** `helm template` leaves NOTES.txt out: render it as a ConfigMap in a copy of the chart. */
  async function notes(args: string[]): Promise<string> {
    const chart = path.join(tmp, 'notes', 'meterline');
    rmSync(path.dirname(chart), { recursive: true, force: true });
    cpSync(CHART, chart, { recursive: true });
    const text = readFileSync(path.join(chart, 'templates/NOTES.txt'), 'utf8');
    rmSync(path.join(chart, 'templates/NOTES.txt'));
    writeFileSync(
      path.join(chart, 'templates/_notes.tpl'),
      `{{- define "test.notes" -}}\n${text}{{- end -}}\n`,
    );
    writeFileSync(
      path.join(chart, 'templates/notes.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "test.notes" . | quote }}\n',
    );
    const r = await template(chart, [...args, '--show-only', 'templates/notes.yaml']);
    expect(r.code, r.stderr).toBe(0);
    return String(parse(r.stdout).data.notes);
  }

  it.each([
    ['minimal', ['-f', path.join(VALUES, 'minimal.yaml')]],
    ['saas', ['-f', path.join(VALUES, 'saas.yaml')]],
    ['container', ['-f', path.join(VALUES, 'container.yaml')]],
    ['full', full],
    [
      'full against the emulator',
      [...full, '--set', 'aws.meteringEndpoint=http://meterline-emulator.metering:8080'],
    ],
  ])('%s: under 30 lines, pointing to the README and to helm test', async (_, args) => {
    const text = await notes(args);
    const lines = text.trimEnd().split('\n');
    expect(lines.length, text).toBeLessThan(30);
    expect(text).toContain('README.md');
    expect(text).toContain('helm test ml -n metering');
  });
});

describe('the helm test pod', () => {
  const testPods = (objects: Obj[]) =>
    objects.filter((o) => o.kind === 'Pod' && o.metadata.annotations?.['helm.sh/hook'] === 'test');

  it.each([
    ['minimal', ['-f', path.join(VALUES, 'minimal.yaml')], ['processor', 'worker']],
    ['saas', ['-f', path.join(VALUES, 'saas.yaml')], ['processor', 'worker', 'registration']],
    ['full', full, ['processor', 'worker', 'registration']],
    ['worker off', ['-f', path.join(VALUES, 'minimal.yaml'), '--set', 'worker.enabled=false'], ['processor']],
  ] as const)(
    '%s: one pod, the chart’s image and node, checks each enabled role’s health, Kafka and Redis',
    async (_, args, roles) => {
      const objects = await render([...args]);
      const pods = testPods(objects);
      expect(pods).toHaveLength(1);
      const pod = pods[0] as Obj;
      expect(pod.metadata.name).toBe('ml-meterline-test');
      expect(pod.metadata.annotations['helm.sh/hook-delete-policy']).toBe(
        'before-hook-creation,hook-succeeded',
      );
      expect(pod.spec.restartPolicy).toBe('Never');
      expect(pod.spec.containers).toHaveLength(1);
      const c = pod.spec.containers[0];
      const deployment = find(objects, 'Deployment', 'ml-meterline-processor').spec.template.spec
        .containers[0];
      expect(c.image).toBe(deployment.image);
      expect(c.command).toEqual(['node', 'deploy/image/helm-test.ts']);
      expect(c.securityContext).toEqual(deployment.securityContext);
      expect(pod.spec.securityContext).toEqual(
        find(objects, 'Deployment', 'ml-meterline-processor').spec.template.spec.securityContext,
      );
      expect(pod.spec.automountServiceAccountToken).toBe(false);
      // Service links: the script reaches the roles' Services without cluster DNS.
      expect(pod.spec.enableServiceLinks).toBe(true);
      const health = c.args.filter((a: string) => a.startsWith('--health=')).map((a: string) => a.slice(9));
      expect(health).toEqual(
        roles.map((role) => `${role}=http://ml-meterline-${role}-metrics.metering.svc:9464/readyz`),
      );
      // Kafka and Redis exactly as the roles reach them: the release's ConfigMap (KAFKA_BROKERS, REDIS_CLUSTER, …)
      // and the same TLS, SASL and Redis variables, Secrets by reference.
      expect(c.envFrom).toEqual([{ configMapRef: { name: 'ml-meterline-config' } }]);
      const env = new Map<string, unknown>(c.env.map((e: Obj) => [e.name, e.value ?? e.valueFrom]));
      const roleEnv = new Map<string, unknown>(
        deployment.env.map((e: Obj) => [e.name, e.value ?? e.valueFrom]),
      );
      for (const key of [...roleEnv.keys()].filter((k) =>
        /^(KAFKA_|REDIS_|METERLINE_REDIS_PASSWORD)/.test(k),
      ))
        expect(env.get(key), key).toEqual(roleEnv.get(key));
      expect(env.get('REDIS_URL')).toBeDefined();
      await expectValid(objects);
    },
  );

  it('is left out when metrics.service is off and the roles have no Service to reach, says so in its args', async () => {
    const objects = await render([
      '-f',
      path.join(VALUES, 'minimal.yaml'),
      '--set',
      'metrics.service.enabled=false',
    ]);
    const c = (testPods(objects)[0] as Obj).spec.containers[0];
    expect(c.args.filter((a: string) => a.startsWith('--health='))).toEqual([]);
    expect(c.args).toContain('--no-health');
  });

  it('the image has the script the pod runs', () => {
    expect(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')).toContain(
      'COPY deploy/image/helm-test.ts ./deploy/image/helm-test.ts',
    );
    expect(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')).toContain('!deploy/image/helm-test.ts');
  });

  it('its NetworkPolicy (a test hook too) lets it reach Kafka, Redis, DNS and the roles’ metrics port, and the roles let it in', async () => {
    const objects = await render(full);
    const policy = find(objects, 'NetworkPolicy', 'ml-meterline-test');
    expect(policy.metadata.annotations['helm.sh/hook']).toBe('test');
    expect(policy.metadata.annotations['helm.sh/hook-weight']).toBe('-1');
    expect(policy.spec.podSelector.matchLabels['app.kubernetes.io/component']).toBe('test');
    const pod = testPods(objects)[0] as Obj;
    expect(pod.metadata.labels['app.kubernetes.io/component']).toBe('test');
    const ports = (policy.spec.egress as Obj[]).flatMap((r) =>
      (r.ports ?? []).map((p: Obj) => `${p.protocol}/${p.port}`),
    );
    expect(ports).toEqual(expect.arrayContaining(['TCP/9093', 'TCP/6379', 'UDP/53', 'TCP/9464']));
    expect(ports).not.toContain('TCP/443');
    const toRoles = (policy.spec.egress as Obj[]).find((r) => r.ports?.some((p: Obj) => p.port === 9464));
    expect(toRoles?.to).toEqual([
      {
        podSelector: {
          matchLabels: { 'app.kubernetes.io/name': 'meterline', 'app.kubernetes.io/instance': 'ml' },
        },
      },
    ]);
    // full narrows metricsFrom to the monitoring namespace: the test pod is added to each role's metrics ingress.
    for (const role of ROLES) {
      const rolePolicy = find(objects, 'NetworkPolicy', `ml-meterline-${role}`);
      const metrics = (rolePolicy.spec.ingress as Obj[]).find((r) => r.ports[0].port === 'metrics');
      expect(metrics?.from, role).toContainEqual({
        podSelector: {
          matchLabels: {
            'app.kubernetes.io/name': 'meterline',
            'app.kubernetes.io/instance': 'ml',
            'app.kubernetes.io/component': 'test',
          },
        },
      });
    }
  });
});
