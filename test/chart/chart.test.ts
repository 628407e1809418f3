/**
 * The Helm chart (helm/meterline): lint, render, offline schema validation and the properties every render
 * must have. helm and kubeconform come from deploy/tools/tools.ts, which builds them on first use and caches
 * them outside the clone: a cold machine spends about 3 min on helm and 2 min on kubeconform and the
 * Kubernetes 1.35 + prometheus-operator schemas (hence the long beforeAll timeout); warm, this file takes a
 * few seconds (one `helm template` and one kubeconform run per value set).
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ensureK8sSchemas, ensureTool, KUBERNETES_VERSION, kubeconform } from '../../deploy/tools/tools.ts';
import { loadConfig, type Role } from '../../src/config/config.ts';
import { EnvSchema } from '../../src/config/env-schema.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHART = path.join(ROOT, 'helm/meterline');
const VALUES = path.join(ROOT, 'test/chart/values');
const GOOD = ['minimal', 'saas', 'container', 'full'] as const;
type SetName = (typeof GOOD)[number];
const BAD = readdirSync(VALUES)
  .filter((f) => f.startsWith('bad-') && f.endsWith('.yaml'))
  .sort();
const COLD_BUILD_MS = 20 * 60_000;
const STATIC_KEY_ENV = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];
/** The registration service's own variables (its contract with the chart), set on its container only. */
const REGISTRATION_ENV = [
  'METERLINE_REGISTRATION_LISTEN_PORT',
  'METERLINE_REGISTRATION_REDIRECT_URL',
  'METERLINE_SNS_TOPIC_ARNS',
  'METERLINE_EVENTS_API_KEY',
  'METERLINE_LINK_API_KEY',
  'METERLINE_HANDOFF_SIGNING_SECRET',
];
/** The value sets that run the registration service. */
const WITH_REGISTRATION = ['saas', 'full'] as const;
/** The console's own variables, set on its container only. */
const CONSOLE_ENV = [
  'METERLINE_CONSOLE_PORT',
  'METERLINE_CONSOLE_TOKENS',
  'METERLINE_CONSOLE_IDENTITY_HEADER',
  'METERLINE_CONSOLE_OPERATORS',
  'METERLINE_JAEGER_URL',
];
/** The value sets that run the console. */
const WITH_CONSOLE = ['full'] as const;

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects are walked as plain data.
type Obj = Record<string, any>;

let helm: string;
const rendered = new Map<SetName, { text: string; objects: Obj[] }>();

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const template = (valuesFile: string, extra: string[] = [], chart = CHART) =>
  run(helm, [
    'template',
    'ml',
    chart,
    '--namespace',
    'metering',
    '--kube-version',
    KUBERNETES_VERSION,
    '-f',
    valuesFile,
    ...extra,
  ]);

function objectsOf(text: string): Obj[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null && typeof o === 'object');
}

const set = (name: SetName) => {
  const r = rendered.get(name);
  if (!r) throw new Error(`${name} was not rendered`);
  return r;
};
const ofKind = (name: SetName, kind: string) => set(name).objects.filter((o) => o.kind === kind);
const byName = (name: SetName, kind: string, objName: string) => {
  const found = ofKind(name, kind).find((o) => o.metadata.name === objName);
  if (!found) throw new Error(`${name}: no ${kind} ${objName}`);
  return found;
};

/** The environment a container of a Deployment ends up with: envFrom ConfigMaps, then env. */
function effectiveEnv(name: SetName, pod: Obj, container: Obj): Map<string, string | Obj> {
  const env = new Map<string, string | Obj>();
  for (const from of container.envFrom ?? []) {
    expect(from.configMapRef, 'envFrom only from ConfigMaps').toBeDefined();
    const cm = byName(name, 'ConfigMap', from.configMapRef.name);
    for (const [k, v] of Object.entries(cm.data ?? {})) env.set(k, String(v));
  }
  for (const e of container.env ?? []) env.set(e.name, e.value ?? e.valueFrom);
  expect(pod).toBeDefined();
  return env;
}

/** Every leaf key path of a values document: maps are walked, lists and scalars are leaves. */
const valuesOf = (name: SetName) => parse(readFileSync(path.join(VALUES, `${name}.yaml`), 'utf8'));

/** The ServiceAccount a role's pods run as, from the value set. */
function serviceAccountOf(name: SetName, role: string): string {
  const named = valuesOf(name).registration?.serviceAccount?.name;
  return role === 'registration' && named ? named : `ml-meterline-${role}`;
}

/** A NetworkPolicy's egress as `PROTOCOL/port` strings, one per port of each rule. */
const portsOf = (policy: Obj): string[] =>
  (policy.spec.egress ?? []).flatMap((r: Obj) => (r.ports ?? []).map((p: Obj) => `${p.protocol}/${p.port}`));

/** Whether a NetworkPolicy's podSelector selects pods with these labels. */
const selects = (policy: Obj, labels: Record<string, string>) =>
  Object.entries(policy.spec.podSelector.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
  (policy.spec.podSelector.matchExpressions ?? []).every((e: Obj) =>
    e.operator === 'NotIn'
      ? !e.values.includes(labels[e.key])
      : e.operator === 'In' && e.values.includes(labels[e.key]),
  );

function leafPaths(node: unknown, prefix = ''): string[] {
  if (node && typeof node === 'object' && !Array.isArray(node) && Object.keys(node).length) {
    return Object.entries(node).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
  }
  return [prefix];
}

beforeAll(async () => {
  const log = (line: string) => process.stderr.write(`[chart test] ${line}\n`);
  helm = await ensureTool('helm', { log });
  await ensureTool('kubeconform', { log });
  await ensureK8sSchemas({ log });
  for (const name of GOOD) {
    const r = await template(path.join(VALUES, `${name}.yaml`));
    if (r.code !== 0) throw new Error(`helm template ${name} failed:\n${r.stderr}`);
    rendered.set(name, { text: r.stdout, objects: objectsOf(r.stdout) });
  }
}, COLD_BUILD_MS);

describe('helm lint and offline validation', () => {
  it.each(GOOD)('helm lint --strict passes with %s values', async (name) => {
    const r = await run(helm, [
      'lint',
      '--strict',
      '--kube-version',
      KUBERNETES_VERSION,
      CHART,
      '-f',
      path.join(VALUES, `${name}.yaml`),
    ]);
    expect(r.stderr + r.stdout).toContain('0 chart(s) failed');
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it.each(GOOD)('kubeconform (strict, Kubernetes 1.35 + CRDs) finds every %s object valid', async (name) => {
    const { text, objects } = set(name);
    const r = await kubeconform(['-summary', '-verbose', '-output', 'json', '-'], text);
    const report = JSON.parse(r.stdout) as {
      resources: { kind: string; name: string; status: string; msg: string }[];
      summary: { valid: number; invalid: number; errors: number; skipped: number };
    };
    const notValid = report.resources.filter((res) => res.status !== 'statusValid');
    expect(notValid, JSON.stringify(notValid, null, 2)).toEqual([]);
    expect(report.summary).toEqual({ valid: objects.length, invalid: 0, errors: 0, skipped: 0 });
    expect(r.code).toBe(0);
  });
});

describe('rendered objects', () => {
  it('each value set renders the objects it asks for, and only those', () => {
    const kinds = (name: SetName) => [...new Set(set(name).objects.map((o) => o.kind))].sort();
    // The NetworkPolicies are on by default; the Pod is the helm test hook (test/chart/conventions.test.ts).
    const base = [
      'ConfigMap',
      'Deployment',
      'NetworkPolicy',
      'Pod',
      'PodDisruptionBudget',
      'Service',
      'ServiceAccount',
    ];
    expect(kinds('minimal')).toEqual(base);
    expect(kinds('saas')).toEqual([...base, 'Ingress'].sort());
    expect(kinds('container')).toEqual(base);
    expect(kinds('full')).toEqual(
      [...base, 'HorizontalPodAutoscaler', 'Ingress', 'Job', 'PrometheusRule', 'ServiceMonitor'].sort(),
    );
    for (const name of GOOD) {
      const registration = (WITH_REGISTRATION as readonly string[]).includes(name);
      const console = (WITH_CONSOLE as readonly string[]).includes(name);
      expect(
        ofKind(name, 'Deployment')
          .map((d) => d.metadata.name)
          .sort(),
      ).toEqual([
        ...(console ? ['ml-meterline-console'] : []),
        'ml-meterline-processor',
        ...(registration ? ['ml-meterline-registration'] : []),
        'ml-meterline-worker',
      ]);
      // The console runs one replica: no PodDisruptionBudget.
      expect(ofKind(name, 'PodDisruptionBudget')).toHaveLength(registration ? 3 : 2);
      expect(ofKind(name, 'Secret'), 'the chart never makes a Secret').toEqual([]);
    }
  });

  it.each(GOOD)('%s: every Deployment is locked down, probed on the ops port and sized', (name) => {
    for (const d of ofKind(name, 'Deployment')) {
      const role = d.metadata.labels['app.kubernetes.io/component'];
      const pod = d.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
      expect(pod.containers).toHaveLength(1);
      const c = pod.containers[0];
      expect(c.args).toEqual([role]);
      expect(c.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        privileged: false,
        capabilities: { drop: ['ALL'] },
      });
      expect(c.securityContext.capabilities.add).toBeUndefined();
      expect(c.resources.requests.cpu).toBeTruthy();
      expect(c.resources.requests.memory).toBeTruthy();
      expect(c.resources.limits.memory).toBeTruthy();

      const env = effectiveEnv(name, pod, c);
      const port = c.ports.find((p: Obj) => p.name === 'metrics');
      expect(port, 'a containerPort named metrics').toBeDefined();
      expect(String(port.containerPort)).toBe(env.get('METERLINE_OPS_PORT'));
      expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
      expect(c.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });

      // /tmp is the one writable place: an emptyDir.
      const tmp = c.volumeMounts.find((m: Obj) => m.mountPath === '/tmp');
      expect(pod.volumes.find((v: Obj) => v.name === tmp?.name)?.emptyDir).toBeDefined();

      // The plan (and for SaaS the customers file) are files from the chart's ConfigMap.
      const files = pod.volumes.find((v: Obj) => v.configMap?.name === 'ml-meterline-files');
      const mount = c.volumeMounts.find((m: Obj) => m.name === files?.name);
      const data = byName(name, 'ConfigMap', 'ml-meterline-files').data;
      const plan = String(env.get('METERLINE_PLAN'));
      expect(path.dirname(plan)).toBe(mount.mountPath);
      expect(JSON.parse(data[path.basename(plan)])).toEqual(
        parse(readFileSync(path.join(VALUES, `${name}.yaml`), 'utf8')).metering.plan,
      );
      const customers = env.get('METERLINE_CUSTOMERS');
      if (customers !== undefined) {
        expect(path.dirname(String(customers))).toBe(mount.mountPath);
        expect(data[path.basename(String(customers))]).toBeDefined();
      }

      expect(env.get('OTEL_SERVICE_NAME')).toBe(`meterline-${role}`);
      for (const key of ['KAFKA_BROKERS', 'REDIS_URL', 'AWS_REGION']) expect(env.get(key)).toBeTruthy();
      for (const key of STATIC_KEY_ENV) expect(env.has(key), key).toBe(false);
      expect(d.spec.template.metadata.annotations['checksum/config']).toMatch(/^[a-f0-9]{64}$/);
      expect(pod.serviceAccountName).toBe(serviceAccountOf(name, role));

      // Only the registration service and the console serve HTTP besides the ops port, and only each gets
      // its own variables.
      const http = c.ports.find((p: Obj) => p.name === 'http');
      if (role === 'registration') {
        expect(String(http?.containerPort)).toBe(env.get('METERLINE_REGISTRATION_LISTEN_PORT'));
        expect(http.containerPort).not.toBe(port.containerPort);
      } else if (role === 'console') {
        expect(String(http?.containerPort)).toBe(env.get('METERLINE_CONSOLE_PORT'));
        expect(http.containerPort).not.toBe(port.containerPort);
      } else {
        expect(http).toBeUndefined();
        for (const key of REGISTRATION_ENV) expect(env.has(key), `${role} ${key}`).toBe(false);
      }
      if (role !== 'console')
        for (const key of CONSOLE_ENV) expect(env.has(key), `${role} ${key}`).toBe(false);
    }
  });

  it.each(GOOD)(
    '%s: every pod (Deployments and the topics Job) meets the restricted Pod Security Standard',
    (name) => {
      const pods = set(name)
        .objects.filter((o) => o.kind === 'Deployment' || o.kind === 'Job')
        .map((o) => ({ name: `${o.kind}/${o.metadata.name}`, spec: o.spec.template.spec as Obj }));
      expect(pods.length).toBeGreaterThanOrEqual(2);
      for (const { name: pod, spec } of pods) {
        for (const host of ['hostNetwork', 'hostPID', 'hostIPC'])
          expect(spec[host], `${pod} ${host}`).toBeUndefined();
        for (const v of spec.volumes ?? []) {
          const type = Object.keys(v).filter((k) => k !== 'name');
          expect(['configMap', 'emptyDir', 'secret', 'projected'], `${pod} volume ${v.name}`).toEqual(
            expect.arrayContaining(type),
          );
        }
        expect(spec.securityContext.runAsNonRoot, pod).toBe(true);
        expect(spec.securityContext.seccompProfile?.type, pod).toBe('RuntimeDefault');
        // Service links would put METERLINE_REGISTRATION_* (from the Service's name) into every pod's config.
        expect(spec.enableServiceLinks, pod).toBe(false);
        for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
          const sc = c.securityContext;
          expect(sc.allowPrivilegeEscalation, `${pod}/${c.name}`).toBe(false);
          expect(sc.privileged, `${pod}/${c.name}`).toBe(false);
          expect(sc.readOnlyRootFilesystem, `${pod}/${c.name}`).toBe(true);
          expect(sc.capabilities, `${pod}/${c.name}`).toEqual({ drop: ['ALL'] });
          expect(sc.runAsUser ?? spec.securityContext.runAsUser, `${pod}/${c.name}`).toBeGreaterThan(0);
          expect(
            c.ports?.some((p: Obj) => p.hostPort !== undefined) ?? false,
            `${pod}/${c.name} hostPort`,
          ).toBe(false);
          expect(c.resources.requests, `${pod}/${c.name} requests`).toBeDefined();
        }
        expect(spec.automountServiceAccountToken, `${pod}: meterline never calls the Kubernetes API`).toBe(
          false,
        );
      }
    },
  );

  it('the containers get only variables meterline reads, and every key meterline reads has a value in the chart', async () => {
    // Besides meterline's own keys (src/config/config.ts): the OpenTelemetry SDK's standard variables (the
    // preload and the SDK read them), Node's NODE_EXTRA_CA_CERTS, and METERLINE_REDIS_PASSWORD, which exists
    // only to be expanded into REDIS_URL by Kubernetes.
    const extra = [
      'OTEL_EXPORTER_OTLP_ENDPOINT',
      'OTEL_TRACES_SAMPLER',
      'OTEL_TRACES_SAMPLER_ARG',
      'OTEL_SERVICE_NAME',
      'NODE_EXTRA_CA_CERTS',
      'METERLINE_REDIS_PASSWORD',
    ];
    const known = new Set([...Object.keys(EnvSchema.shape), ...extra, ...REGISTRATION_ENV]);
    const r = await template(path.join(VALUES, 'full.yaml'), [
      '--set',
      'aws.meteringEndpoint=http://emulator:8080',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const objects = objectsOf(r.stdout);
    const seen = new Set<string>();
    for (const d of objects.filter((o) => o.kind === 'Deployment')) {
      const pod = d.spec.template.spec;
      for (const key of effectiveEnv('full', pod, pod.containers[0]).keys()) seen.add(key);
    }
    for (const cm of objects.filter(
      (o) => o.kind === 'ConfigMap' && o.metadata.name === 'ml-meterline-config',
    )) {
      for (const key of Object.keys(cm.data)) seen.add(key);
    }
    expect([...seen].filter((k) => !known.has(k))).toEqual([]);
    expect(Object.keys(EnvSchema.shape).filter((k) => !seen.has(k))).toEqual([]);
    for (const key of [...extra, ...REGISTRATION_ENV]) expect(seen.has(key), key).toBe(true);
  });

  it.each(GOOD)(
    "%s: each Deployment's environment and files pass meterline's own start-up checks",
    (name) => {
      // The pod as the kubelet would start it: the ConfigMap files and Secret keys written to a temp dir in
      // place of the mounts, Secret values filled in, $(VAR) references expanded.
      const dir = mkdtempSync(path.join(os.tmpdir(), 'meterline-chart-config-'));
      try {
        const files = byName(name, 'ConfigMap', 'ml-meterline-files').data as Record<string, string>;
        for (const [file, text] of Object.entries(files)) writeFileSync(path.join(dir, file), text);
        writeFileSync(path.join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
        const values = parse(readFileSync(path.join(VALUES, `${name}.yaml`), 'utf8'));
        for (const d of ofKind(name, 'Deployment')) {
          const role = d.metadata.labels['app.kubernetes.io/component'] as Role;
          const pod = d.spec.template.spec;
          const env: NodeJS.ProcessEnv = {};
          for (const [key, value] of effectiveEnv(name, pod, pod.containers[0])) {
            if (typeof value !== 'string') {
              expect(value.secretKeyRef, `${key} comes from a Secret`).toBeDefined();
              // The console's Secret holds name:role:token entries; the others, one opaque value.
              env[key] =
                key === 'METERLINE_CONSOLE_TOKENS'
                  ? `ana:operator:${'t'.repeat(32)}`
                  : `secret-${key.toLowerCase()}`;
              continue;
            }
            env[key] = value
              .replaceAll(/\$\((\w+)\)/g, (_, ref: string) => env[ref] ?? '')
              .replace(/^\/etc\/meterline\//, `${dir}/`)
              .replace(/^\/etc\/meterline-[a-z]+-?ca\/.+$/, path.join(dir, 'ca.pem'));
          }
          const config = loadConfig([role], env);
          expect(config.worker.mode).toBe(values.metering.mode ?? 'saas');
          expect(config.kafka.brokers).toEqual(values.kafka.brokers);
          expect(config.plan.products.length).toBeGreaterThan(0);
          expect(config.opsPort).toBe(9464);
          if (values.redis.auth?.existingSecret)
            expect(config.redis.url).toContain(':secret-meterline_redis_password@');
          // The registration service gets no Kafka credentials: it does not use Kafka.
          if (values.kafka.sasl?.mechanism)
            expect(config.kafka.security.sasl?.mechanism).toBe(
              role === 'registration' ? undefined : values.kafka.sasl.mechanism,
            );
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it.each(GOOD)('%s: no AWS static credentials anywhere', (name) => {
    const { text, objects } = set(name);
    expect(text).not.toMatch(/\b(AKIA|ASIA)[A-Z0-9]{16}\b/);
    for (const key of STATIC_KEY_ENV) expect(text).not.toContain(key);
    expect(text).not.toMatch(/accessKeyId|secretAccessKey/i);
    for (const o of objects) expect(o.kind).not.toBe('Secret');
  });

  it('the worker ServiceAccount carries the IRSA role in the saas and container sets; the processor none', () => {
    for (const name of ['saas', 'container', 'full'] as const) {
      const roleArn = valuesOf(name).serviceAccount.roleArn;
      const worker = byName(name, 'ServiceAccount', 'ml-meterline-worker');
      expect(worker.metadata.annotations['eks.amazonaws.com/role-arn']).toBe(roleArn);
      const processor = byName(name, 'ServiceAccount', 'ml-meterline-processor');
      expect(processor.metadata.annotations?.['eks.amazonaws.com/role-arn']).toBeUndefined();
    }
    const minimal = byName('minimal', 'ServiceAccount', 'ml-meterline-worker');
    expect(minimal.metadata.annotations?.['eks.amazonaws.com/role-arn']).toBeUndefined();
  });

  it.each(WITH_REGISTRATION)(
    "%s: the registration service has its own ServiceAccount with its own IRSA role, not the worker's",
    (name) => {
      const values = valuesOf(name);
      const sa = byName(name, 'ServiceAccount', serviceAccountOf(name, 'registration'));
      expect(sa.metadata.labels['app.kubernetes.io/component']).toBe('registration');
      expect(sa.automountServiceAccountToken).toBe(false);
      const roleArn = sa.metadata.annotations['eks.amazonaws.com/role-arn'];
      expect(roleArn).toBe(values.registration.serviceAccount.roleArn);
      expect(roleArn).toMatch(/^arn:aws:iam::\d{12}:role\/meterline-registration$/);
      expect(roleArn).not.toBe(values.serviceAccount.roleArn);
      const pod = byName(name, 'Deployment', 'ml-meterline-registration').spec.template.spec;
      expect(pod.serviceAccountName).toBe(sa.metadata.name);
      expect(pod.automountServiceAccountToken).toBe(false);
      // The chart-wide annotations reach it too, besides its own.
      for (const [k, v] of Object.entries({
        ...(values.serviceAccount.annotations ?? {}),
        ...(values.registration.serviceAccount.annotations ?? {}),
      }))
        expect(sa.metadata.annotations[k], k).toBe(v);
    },
  );

  it('container mode sets METERLINE_METERING_MODE=container and needs no customers file', () => {
    const config = byName('container', 'ConfigMap', 'ml-meterline-config').data;
    expect(config.METERLINE_METERING_MODE).toBe('container');
    expect(config.METERLINE_CUSTOMERS).toBeUndefined();
    expect(byName('container', 'ConfigMap', 'ml-meterline-files').data['customers.json']).toBeUndefined();
    const saas = byName('saas', 'ConfigMap', 'ml-meterline-config').data;
    expect(saas.METERLINE_METERING_MODE).toBe('saas');
    expect(saas.METERLINE_CUSTOMERS).toBe('/etc/meterline/customers.json');
  });

  it('the Redis password comes from the Secret reference, expanded into REDIS_URL by Kubernetes', () => {
    const worker = byName('saas', 'Deployment', 'ml-meterline-worker').spec.template.spec.containers[0];
    const names = worker.env.map((e: Obj) => e.name);
    expect(names.indexOf('METERLINE_REDIS_PASSWORD')).toBeLessThan(names.indexOf('REDIS_URL'));
    expect(worker.env.find((e: Obj) => e.name === 'METERLINE_REDIS_PASSWORD').valueFrom).toEqual({
      secretKeyRef: { name: 'meterline-redis', key: 'password' },
    });
    expect(worker.env.find((e: Obj) => e.name === 'REDIS_URL').value).toBe(
      'rediss://:$(METERLINE_REDIS_PASSWORD)@master.meterline.cache.amazonaws.com:6379',
    );
    const cluster = byName('full', 'Deployment', 'ml-meterline-processor').spec.template.spec.containers[0];
    const url: string = cluster.env.find((e: Obj) => e.name === 'REDIS_URL').value;
    expect(url.split(',')).toHaveLength(3);
    for (const u of url.split(','))
      expect(u).toMatch(/^rediss:\/\/meterline:\$\(METERLINE_REDIS_PASSWORD\)@/);
  });

  it('Kafka TLS and SASL reach every Kafka client (Deployments and the topics Job), credentials by reference', () => {
    const pods = (name: SetName) =>
      set(name)
        .objects.filter((o) => o.kind === 'Deployment' || o.kind === 'Job')
        .map((o) => o.spec.template.spec as Obj);
    const kafkaPods = (name: SetName) =>
      pods(name).filter((pod) => pod.containers[0].name !== 'registration');
    // The processor, the worker, the console and the topics Job.
    expect(kafkaPods('full')).toHaveLength(4);
    for (const pod of kafkaPods('full')) {
      const c = pod.containers[0];
      const env = new Map<string, Obj>(c.env.map((e: Obj) => [e.name, e]));
      expect(env.get('KAFKA_SSL')?.value).toBe('true');
      expect(env.get('KAFKA_SSL_REJECT_UNAUTHORIZED')?.value).toBe('true');
      expect(env.get('KAFKA_SASL_MECHANISM')?.value).toBe('plain');
      expect(env.get('KAFKA_SASL_USERNAME')?.valueFrom).toEqual({
        secretKeyRef: { name: 'kafka-user', key: 'user' },
      });
      expect(env.get('KAFKA_SASL_PASSWORD')?.valueFrom).toEqual({
        secretKeyRef: { name: 'kafka-user', key: 'pass' },
      });
      // The CA file is the key of the Secret volume, where the container mounts it.
      const caFile = String(env.get('KAFKA_SSL_CA_FILE')?.value);
      const mount = c.volumeMounts.find((m: Obj) => m.mountPath === path.dirname(caFile));
      const volume = pod.volumes.find((v: Obj) => v.name === mount?.name);
      expect(volume?.secret).toEqual({
        secretName: 'kafka-ca',
        items: [{ key: 'ca.pem', path: path.basename(caFile) }],
      });
    }
    for (const pod of kafkaPods('saas')) {
      const names = pod.containers[0].env.map((e: Obj) => e.name);
      expect(names).toEqual(
        expect.arrayContaining(['KAFKA_SSL', 'KAFKA_SASL_MECHANISM', 'KAFKA_SASL_PASSWORD']),
      );
      expect(names).not.toContain('KAFKA_SSL_CA_FILE');
    }
    for (const pod of pods('minimal')) {
      expect(
        pod.containers[0].env.map((e: Obj) => e.name).filter((n: string) => n.startsWith('KAFKA_')),
      ).toEqual([]);
    }
    // The registration service does not use Kafka: no Kafka TLS/SASL variable, Secret or CA reaches it.
    for (const name of WITH_REGISTRATION) {
      const pod = byName(name, 'Deployment', 'ml-meterline-registration').spec.template.spec;
      const c = pod.containers[0];
      expect(c.env.map((e: Obj) => e.name).filter((n: string) => n.startsWith('KAFKA_'))).toEqual([]);
      expect(JSON.stringify(pod)).not.toMatch(/kafka-ca|kafka-user|meterline-kafka/);
    }
    // Redis TLS with a private CA, on the Deployments only (the Job does not use Redis).
    for (const d of ofKind('full', 'Deployment')) {
      const c = d.spec.template.spec.containers[0];
      const caFile = c.env.find((e: Obj) => e.name === 'REDIS_TLS_CA_FILE')?.value;
      expect(caFile).toBe('/etc/meterline-redis-ca/ca.crt');
      expect(c.volumeMounts.map((m: Obj) => m.mountPath)).toContain('/etc/meterline-redis-ca');
    }
  });

  it('full: tracing, HPA, topics Job, NetworkPolicy and monitoring objects are wired as configured', () => {
    const config = byName('full', 'ConfigMap', 'ml-meterline-config').data;
    expect(config).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger-collector.tracing:4318',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
    });
    expect(
      byName('minimal', 'ConfigMap', 'ml-meterline-config').data.OTEL_EXPORTER_OTLP_ENDPOINT,
    ).toBeUndefined();

    const hpa = byName('full', 'HorizontalPodAutoscaler', 'ml-meterline-worker');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: 'ml-meterline-worker',
    });
    expect(
      byName('full', 'Deployment', 'ml-meterline-worker').spec.replicas,
      'the HPA owns replicas',
    ).toBeUndefined();
    expect(byName('full', 'Deployment', 'ml-meterline-processor').spec.replicas).toBe(3);

    const job = byName('full', 'Job', 'ml-meterline-topics');
    expect(job.metadata.annotations['helm.sh/hook']).toBe('pre-install,pre-upgrade');
    const jc = job.spec.template.spec.containers[0];
    expect(jc.command).toEqual(['node', 'deploy/image/create-topics.ts']);
    expect(jc.args).toContain('--usage-retention-hours=336');
    expect(jc.args).toContain('--min-usage-retention-hours=72');
    expect(jc.args).toContain('--replication-factor=3');
    expect(jc.securityContext.readOnlyRootFilesystem).toBe(true);

    // Each role's policy, with the full set's peers and ports (the per-role rules: describe 'the NetworkPolicies').
    const processorNp = byName('full', 'NetworkPolicy', 'ml-meterline-processor');
    expect(portsOf(processorNp).sort()).toEqual(
      ['TCP/9093', 'TCP/6379', 'TCP/8080', 'TCP/4318', 'UDP/53', 'TCP/53', 'TCP/80'].sort(),
    );
    const kafkaRule = processorNp.spec.egress.find((r: Obj) => r.ports.some((p: Obj) => p.port === 9093));
    expect(kafkaRule.to).toEqual([{ ipBlock: { cidr: '10.20.0.0/16' } }]);
    // metricsFrom, plus the helm test pod of the release (test/chart/conventions.test.ts).
    const monitoring = [
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
      {
        podSelector: {
          matchLabels: {
            'app.kubernetes.io/name': 'meterline',
            'app.kubernetes.io/instance': 'ml',
            'app.kubernetes.io/component': 'test',
          },
        },
      },
    ];
    for (const role of ['processor', 'worker'])
      expect(byName('full', 'NetworkPolicy', `ml-meterline-${role}`).spec.ingress).toEqual([
        { ports: [{ port: 'metrics', protocol: 'TCP' }], from: monitoring },
      ]);
    const regNp = byName('full', 'NetworkPolicy', 'ml-meterline-registration');
    expect(regNp.spec.podSelector.matchLabels['app.kubernetes.io/component']).toBe('registration');
    expect(regNp.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(regNp.spec.ingress).toEqual([
      {
        ports: [{ port: 'http', protocol: 'TCP' }],
        from: [
          {
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } },
            podSelector: { matchLabels: { 'app.kubernetes.io/name': 'ingress-nginx' } },
          },
        ],
      },
      { ports: [{ port: 'metrics', protocol: 'TCP' }], from: monitoring },
    ]);
    // Redis, OTLP, AWS and SNS, DNS and the extra rule: no Kafka (9093) and no schema registry (8080).
    expect([...new Set(portsOf(regNp))].sort()).toEqual(
      ['TCP/6379', 'TCP/4318', 'TCP/443', 'UDP/53', 'TCP/53', 'TCP/80'].sort(),
    );
    // The topics Job: Kafka and DNS (and the extra rule), no ingress at all.
    const topicsNp = byName('full', 'NetworkPolicy', 'ml-meterline-topics');
    expect(portsOf(topicsNp).sort()).toEqual(['TCP/9093', 'UDP/53', 'TCP/53', 'TCP/80'].sort());
    expect(topicsNp.spec.ingress ?? []).toEqual([]);

    const sm = byName('full', 'ServiceMonitor', 'ml-meterline');
    expect(sm.metadata.labels.release).toBe('kube-prometheus-stack');
    // One metrics Service per role, all selected by the ServiceMonitor; the registration's and the console's
    // HTTP Services are not.
    const services = ofKind('full', 'Service');
    const metricsServices = services.filter((svc) => svc.metadata.name.endsWith('-metrics'));
    expect(metricsServices.map((svc) => svc.metadata.name).sort()).toEqual([
      'ml-meterline-console-metrics',
      'ml-meterline-processor-metrics',
      'ml-meterline-registration-metrics',
      'ml-meterline-worker-metrics',
    ]);
    const selected = (svc: Obj) =>
      Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => svc.metadata.labels[k] === v);
    for (const svc of metricsServices) {
      expect(selected(svc), svc.metadata.name).toBe(true);
      expect(svc.spec.ports[0].name).toBe(sm.spec.endpoints[0].port);
      const role = svc.metadata.labels['app.kubernetes.io/component'];
      expect(svc.spec.selector).toEqual(
        byName('full', 'Deployment', `ml-meterline-${role}`).spec.selector.matchLabels,
      );
    }
    expect(
      services
        .filter((svc) => !metricsServices.includes(svc))
        .map((svc) => svc.metadata.name)
        .sort(),
    ).toEqual(['ml-meterline-console', 'ml-meterline-registration']);
    expect(selected(byName('full', 'Service', 'ml-meterline-registration'))).toBe(false);
    expect(selected(byName('full', 'Service', 'ml-meterline-console'))).toBe(false);
  });

  it('the PrometheusRule holds exactly the alerts of files/alert-rules.yaml, and the dashboard the JSON', () => {
    const file = parse(readFileSync(path.join(CHART, 'files/alert-rules.yaml'), 'utf8'));
    const alerts = (spec: Obj) =>
      spec.groups.flatMap((g: Obj) => g.rules.map((r: Obj) => r.alert)).filter(Boolean);
    const rule = byName('full', 'PrometheusRule', 'ml-meterline');
    expect(alerts(rule.spec).length).toBeGreaterThan(0);
    expect(alerts(rule.spec)).toEqual(alerts(file));
    expect(rule.spec).toEqual(file);

    const dashboard = byName('full', 'ConfigMap', 'ml-meterline-dashboard');
    expect(dashboard.metadata.labels.grafana_dashboard).toBe('1');
    expect(dashboard.data['meterline.json']).toBe(
      readFileSync(path.join(CHART, 'files/grafana-dashboard.json'), 'utf8'),
    );
  });

  it('a change of the metering plan changes the checksum, so the pods roll', async () => {
    const r = await template(path.join(VALUES, 'minimal.yaml'), [
      '--set',
      'metering.plan.productCode=prod-other',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const checksum = (objects: Obj[]) =>
      objects.find((o) => o.kind === 'Deployment')?.spec.template.metadata.annotations['checksum/config'];
    expect(checksum(objectsOf(r.stdout))).toMatch(/^[a-f0-9]{64}$/);
    expect(checksum(objectsOf(r.stdout))).not.toBe(checksum(set('minimal').objects));
  });
});

describe('the NetworkPolicies', () => {
  const policies = (objects: Obj[]) => objects.filter((o) => o.kind === 'NetworkPolicy');
  const policy = (objects: Obj[], name: string) => {
    const found = policies(objects).find((o) => o.metadata.name === name);
    if (!found) throw new Error(`no NetworkPolicy ${name}`);
    return found;
  };
  /** The egress rules that allow a port (TCP), with their peers (undefined: any address). */
  const rulesFor = (np: Obj, port: number) =>
    (np.spec.egress ?? []).filter((r: Obj) => (r.ports ?? []).some((p: Obj) => p.port === port));

  it.each(GOOD)(
    '%s: on by default; every pod of the release is under the deny-all baseline plus exactly its own role policy',
    (name) => {
      const objects = set(name).objects;
      const baseline = policy(objects, 'ml-meterline');
      expect(baseline.spec.policyTypes).toEqual(['Ingress', 'Egress']);
      expect(baseline.spec.ingress ?? []).toEqual([]);
      expect(baseline.spec.egress ?? []).toEqual([]);
      expect(baseline.spec.podSelector).toEqual({
        matchLabels: { 'app.kubernetes.io/name': 'meterline', 'app.kubernetes.io/instance': 'ml' },
      });
      const workloads = objects.filter((o) => o.kind === 'Deployment' || o.kind === 'Job');
      expect(workloads.length).toBeGreaterThanOrEqual(2);
      for (const w of workloads) {
        const labels = w.spec.template.metadata.labels;
        const role = labels['app.kubernetes.io/component'];
        expect(
          policies(objects)
            .filter((np) => selects(np, labels))
            .map((np) => np.metadata.name)
            .sort(),
          w.metadata.name,
        ).toEqual(['ml-meterline', `ml-meterline-${role}`]);
        const own = policy(objects, `ml-meterline-${role}`);
        expect(own.spec.policyTypes).toEqual(['Ingress', 'Egress']);
        // No egress rule without ports: every rule names its ports.
        for (const rule of own.spec.egress)
          expect(rule.ports?.length, `${role}: ${JSON.stringify(rule)}`).toBeGreaterThan(0);
        // DNS, to the cluster DNS pods, for everyone.
        expect(portsOf(own)).toEqual(expect.arrayContaining(['UDP/53', 'TCP/53']));
      }
      // The topics Job runs before the release's objects exist: its policy is a hook that comes first.
      const topics = policies(objects).find((np) => np.metadata.name === 'ml-meterline-topics');
      if (topics) {
        expect(topics.metadata.annotations['helm.sh/hook']).toBe('pre-install,pre-upgrade');
        expect(Number(topics.metadata.annotations['helm.sh/hook-weight'])).toBeLessThan(
          Number(byName('full', 'Job', 'ml-meterline-topics').metadata.annotations['helm.sh/hook-weight']),
        );
      }
    },
  );

  it.each(GOOD)(
    '%s: egress per role — processor: Kafka, Redis, OTLP, DNS and nothing on 443; worker adds AWS on 443; registration AWS and SNS on 443, no Kafka',
    (name) => {
      const objects = set(name).objects;
      const values = valuesOf(name);
      const brokerPorts = values.kafka.brokers.map((b: string) => Number(b.split(':').pop()));
      const processor = policy(objects, 'ml-meterline-processor');
      const ports = portsOf(processor);
      expect(ports).not.toContain('TCP/443');
      for (const p of brokerPorts) expect(ports, `broker port ${p}`).toContain(`TCP/${p}`);
      expect(ports).toContain('TCP/6379');
      expect(ports.some((p) => p === 'TCP/4318')).toBe(Boolean(values.tracing?.otlpEndpoint));
      // Only Kafka, Redis, the schema registry, OTLP and DNS (and what extraEgress adds).
      const extra = (values.networkPolicy?.extraEgress ?? []).flatMap((r: Obj) =>
        r.ports.map((p: Obj) => `${p.protocol}/${p.port}`),
      );
      const allowed = new Set([
        ...brokerPorts.map((p: number) => `TCP/${p}`),
        'TCP/9092',
        'TCP/6379',
        'TCP/4318',
        'TCP/8080',
        'UDP/53',
        'TCP/53',
        ...extra,
      ]);
      expect(ports.filter((p) => !allowed.has(p))).toEqual([]);

      const worker = policy(objects, 'ml-meterline-worker');
      expect(portsOf(worker)).toContain('TCP/443');
      for (const p of brokerPorts) expect(portsOf(worker)).toContain(`TCP/${p}`);
      // Default: 443 to any address (AWS has no fixed ranges), through an explicit 0.0.0.0/0 or no peers.
      for (const rule of rulesFor(worker, 443))
        for (const to of rule.to ?? []) expect(to).toEqual({ ipBlock: { cidr: '0.0.0.0/0' } });
      expect(portsOf(worker)).not.toContain('TCP/8080');

      if ((WITH_REGISTRATION as readonly string[]).includes(name)) {
        const reg = policy(objects, 'ml-meterline-registration');
        expect(portsOf(reg)).toContain('TCP/443');
        // Amazon Trust Services serves a signing certificate's issuer over http.
        expect(portsOf(reg)).toContain('TCP/80');
        for (const p of brokerPorts) expect(portsOf(reg)).not.toContain(`TCP/${p}`);
      } else {
        expect(policies(objects).map((np) => np.metadata.name)).not.toContain('ml-meterline-registration');
      }
    },
  );

  it('the Kafka, Redis and OTLP ports come from the configured addresses too, so a default install reaches them', async () => {
    // saas: MSK on 9096, ElastiCache on 6379; none of it in networkPolicy.*.ports.
    const saas = policy(set('saas').objects, 'ml-meterline-processor');
    expect(rulesFor(saas, 9096)).toHaveLength(1);
    expect(rulesFor(saas, 9096)[0].to).toBeUndefined();
    const r = await template(path.join(VALUES, 'minimal.yaml'), [
      '--set',
      'kafka.brokers={broker-0.example.net:19094}',
      '--set',
      'redis.url=rediss://cache.example.net:16380',
      '--set',
      'tracing.otlpEndpoint=https://otel.example.net',
      '--set',
      'aws.meteringEndpoint=http://meterline-emulator.test:4566',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const objects = objectsOf(r.stdout);
    const processor = policy(objects, 'ml-meterline-processor');
    expect(portsOf(processor)).toEqual(expect.arrayContaining(['TCP/19094', 'TCP/16380']));
    // An https OTLP endpoint without a port is 443, for the processor too: only to that port, as OTLP.
    expect(portsOf(processor)).toContain('TCP/443');
    // The emulator's port for the roles that call AWS.
    expect(portsOf(policy(objects, 'ml-meterline-worker'))).toEqual(
      expect.arrayContaining(['TCP/4566', 'TCP/443']),
    );
    expect(portsOf(processor)).not.toContain('TCP/4566');
  });

  it('narrowing: aws.cidrs and sns.cidrs replace "any address" on 443; peers for Kafka/Redis/OTLP are used as given', async () => {
    const r = await template(path.join(VALUES, 'minimal.yaml'), [
      '--set',
      'registration.enabled=true',
      '--set',
      'networkPolicy.aws.cidrs={10.50.0.0/24}',
      '--set',
      'networkPolicy.sns.cidrs={10.60.0.0/24}',
      '--set-json',
      'networkPolicy.kafka.peers=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kafka"}},"podSelector":{"matchLabels":{"app":"kafka"}}}]',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const objects = objectsOf(r.stdout);
    const worker = policy(objects, 'ml-meterline-worker');
    expect(rulesFor(worker, 443).map((rule: Obj) => rule.to)).toEqual([
      [{ ipBlock: { cidr: '10.50.0.0/24' } }],
    ]);
    const reg = policy(objects, 'ml-meterline-registration');
    expect(rulesFor(reg, 443).map((rule: Obj) => rule.to)).toEqual([
      [{ ipBlock: { cidr: '10.50.0.0/24' } }],
      [{ ipBlock: { cidr: '10.60.0.0/24' } }],
    ]);
    expect(rulesFor(worker, 9092).map((rule: Obj) => rule.to)).toEqual([
      [
        {
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kafka' } },
          podSelector: { matchLabels: { app: 'kafka' } },
        },
      ],
    ]);
    const kc = await kubeconform(['-summary', '-output', 'json', '-'], r.stdout);
    expect(kc.code, kc.stdout).toBe(0);
  });

  it('networkPolicy.enabled=false renders none', async () => {
    const r = await template(path.join(VALUES, 'full.yaml'), ['--set', 'networkPolicy.enabled=false']);
    expect(r.code, r.stderr).toBe(0);
    expect(policies(objectsOf(r.stdout))).toEqual([]);
  });
});

describe('the registration service', () => {
  it.each(WITH_REGISTRATION)(
    '%s: its Deployment runs `registration`, locked down, probed on the ops port, sized as the values say',
    (name) => {
      const values = valuesOf(name);
      const reg = { ...parse(readFileSync(path.join(CHART, 'values.yaml'), 'utf8')).registration };
      const d = byName(name, 'Deployment', 'ml-meterline-registration');
      expect(d.metadata.labels['app.kubernetes.io/component']).toBe('registration');
      expect(d.spec.replicas).toBe(values.registration.replicas ?? reg.replicas);
      const pod = d.spec.template.spec;
      expect(pod.securityContext).toMatchObject({
        runAsNonRoot: true,
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      const c = pod.containers[0];
      expect(c.name).toBe('registration');
      // The image's entrypoint with the subcommand, exactly as the processor and the worker get theirs.
      expect(c.command).toBeUndefined();
      expect(c.args).toEqual(['registration']);
      expect(c.securityContext).toEqual({
        runAsNonRoot: true,
        runAsUser: 65532,
        runAsGroup: 65532,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        privileged: false,
        capabilities: { drop: ['ALL'] },
        seccompProfile: { type: 'RuntimeDefault' },
      });
      expect(c.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
      expect(c.resources).toEqual(values.registration.resources ?? reg.resources);
      expect(pod.terminationGracePeriodSeconds).toBe(
        values.registration.terminationGracePeriodSeconds ?? reg.terminationGracePeriodSeconds,
      );
      expect(c.ports).toEqual([
        { name: 'http', containerPort: values.registration.port ?? reg.port, protocol: 'TCP' },
        { name: 'metrics', containerPort: 9464, protocol: 'TCP' },
      ]);

      const env = effectiveEnv(name, pod, c);
      expect(env.get('METERLINE_REGISTRATION_LISTEN_PORT')).toBe(
        String(values.registration.port ?? reg.port),
      );
      expect(env.get('METERLINE_REGISTRATION_REDIRECT_URL')).toBe(values.registration.redirectUrl);
      expect(env.get('METERLINE_SNS_TOPIC_ARNS')).toBe(values.registration.snsTopicArns.join(','));
      expect(env.get('METERLINE_EVENTS_API_KEY')).toEqual({
        secretKeyRef: {
          name: values.registration.eventsApiKey.existingSecret,
          key: values.registration.eventsApiKey.key ?? reg.eventsApiKey.key,
        },
      });
      // The link key, when set (full), also only from a Secret.
      expect(env.get('METERLINE_LINK_API_KEY')).toEqual(
        values.registration.linkApiKey
          ? {
              secretKeyRef: {
                name: values.registration.linkApiKey.existingSecret,
                key: values.registration.linkApiKey.key,
              },
            }
          : undefined,
      );
      // The hand-off signing key, like the API key, only ever from a Secret.
      expect(env.get('METERLINE_HANDOFF_SIGNING_SECRET')).toEqual({
        secretKeyRef: {
          name: values.registration.handoffSecret.existingSecret,
          key: values.registration.handoffSecret.key ?? reg.handoffSecret.key,
        },
      });
      expect(env.get('METERLINE_PLAN')).toBe('/etc/meterline/plan.json');
      expect(env.get('AWS_REGION')).toBe(values.aws.region);
      for (const key of ['nodeSelector', 'tolerations', 'affinity'])
        expect(pod[key], key).toEqual(values.registration[key]);
    },
  );

  it.each(WITH_REGISTRATION)(
    '%s: the Service and the Ingress route /marketplace, and only that, to the registration pods',
    (name) => {
      const values = valuesOf(name);
      const defaults = parse(readFileSync(path.join(CHART, 'values.yaml'), 'utf8')).registration;
      const d = byName(name, 'Deployment', 'ml-meterline-registration');
      const svc = byName(name, 'Service', 'ml-meterline-registration');
      expect(svc.spec.type).toBe('ClusterIP');
      expect(svc.spec.selector).toEqual(d.spec.selector.matchLabels);
      for (const [k, v] of Object.entries(svc.spec.selector))
        expect(d.spec.template.metadata.labels[k], k).toBe(v);
      const servicePort = values.registration.service?.port ?? defaults.service.port;
      expect(svc.spec.ports).toEqual([
        { name: 'http', port: servicePort, targetPort: 'http', protocol: 'TCP' },
      ]);
      expect(svc.metadata.labels['meterline.io/metrics']).toBeUndefined();

      const ing = byName(name, 'Ingress', 'ml-meterline-registration');
      expect(ing.apiVersion).toBe('networking.k8s.io/v1');
      expect(ing.spec.ingressClassName).toBe(values.registration.ingress.className);
      expect(ing.metadata.annotations).toEqual(values.registration.ingress.annotations);
      expect(ing.spec.tls).toEqual(values.registration.ingress.tls);
      expect(ing.spec.rules.map((r: Obj) => r.host)).toEqual(values.registration.ingress.hosts);
      for (const rule of ing.spec.rules) {
        expect(rule.http.paths).toEqual([
          {
            path: '/marketplace',
            pathType: 'Prefix',
            backend: { service: { name: svc.metadata.name, port: { number: servicePort } } },
          },
        ]);
      }
    },
  );

  it('is off by default, and an Ingress without hosts gets one rule for every host', async () => {
    for (const name of ['minimal', 'container'] as const) {
      const objects = set(name).objects;
      expect(
        objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'registration'),
      ).toEqual([]);
      expect(objects.filter((o) => o.kind === 'Ingress')).toEqual([]);
    }
    const ingressOnly = await template(path.join(VALUES, 'minimal.yaml'), [
      '--set',
      'registration.ingress.enabled=true',
    ]);
    expect(ingressOnly.code, ingressOnly.stderr).toBe(0);
    expect(objectsOf(ingressOnly.stdout).filter((o) => o.kind === 'Ingress')).toEqual([]);

    const r = await template(path.join(VALUES, 'minimal.yaml'), [
      '--set',
      'registration.enabled=true',
      '--set',
      'registration.ingress.enabled=true',
      '--set',
      'registration.service.type=NodePort',
      '--set',
      'registration.service.nodePort=30080',
      '--set',
      'serviceAccount.create=false',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const objects = objectsOf(r.stdout);
    const ing = objects.find((o) => o.kind === 'Ingress') as Obj;
    expect(ing.spec.ingressClassName).toBeUndefined();
    expect(ing.spec.tls).toBeUndefined();
    expect(ing.spec.rules).toEqual([
      {
        http: {
          paths: [
            {
              path: '/marketplace',
              pathType: 'Prefix',
              backend: { service: { name: 'ml-meterline-registration', port: { number: 80 } } },
            },
          ],
        },
      },
    ]);
    const svc = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'ml-meterline-registration');
    expect(svc?.spec.type).toBe('NodePort');
    expect(svc?.spec.ports[0]).toMatchObject({ port: 80, targetPort: 'http', nodePort: 30080 });
    // Its ServiceAccount is its own switch: the others off, the registration's still made (no role: no annotation).
    const accounts = objects.filter((o) => o.kind === 'ServiceAccount');
    expect(accounts.map((o) => o.metadata.name)).toEqual(['ml-meterline-registration']);
    expect(accounts[0]?.metadata.annotations).toBeUndefined();
    const kc = await kubeconform(['-summary', '-output', 'json', '-'], r.stdout);
    expect(kc.code, kc.stdout).toBe(0);
  });
});

describe('NOTES.txt', () => {
  /** `helm template` leaves NOTES.txt out: render it as a ConfigMap in a copy of the chart. */
  async function renderNotes(valuesFile: string, extra: string[] = []): Promise<string> {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'meterline-notes-'));
    try {
      const chart = path.join(dir, 'meterline');
      cpSync(CHART, chart, { recursive: true });
      const notes = readFileSync(path.join(chart, 'templates/NOTES.txt'), 'utf8');
      rmSync(path.join(chart, 'templates/NOTES.txt'));
      writeFileSync(
        path.join(chart, 'templates/_notes.tpl'),
        `{{- define "meterline.test.notes" -}}\n${notes}{{- end -}}\n`,
      );
      writeFileSync(
        path.join(chart, 'templates/notes.yaml'),
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "meterline.test.notes" . | quote }}\n',
      );
      const r = await template(valuesFile, ['--show-only', 'templates/notes.yaml', ...extra], chart);
      expect(r.code, r.stderr).toBe(0);
      return String(parse(r.stdout).data.notes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('shows how to produce a first event with flags `meterline produce` has, and how to find its trace', async () => {
    const produceSource = readFileSync(path.join(ROOT, 'src/cli/produce-command.ts'), 'utf8');
    // Against the emulator: the NOTES may name a real tenant of the customers file.
    const notes = await renderNotes(path.join(VALUES, 'full.yaml'), [
      '--set',
      'aws.meteringEndpoint=http://meterline-emulator.metering:8080',
    ]);
    const command = notes.slice(
      notes.indexOf('node src/cli/main.ts produce'),
      notes.indexOf('--no-progress') + '--no-progress'.length,
    );
    const flags = [...command.matchAll(/\s(--?[a-z][a-z-]*)/g)].map((m) => m[1] as string);
    expect(flags).toEqual(
      expect.arrayContaining([
        '--brokers',
        '--topic',
        '-n',
        '--customers',
        '--dimensions',
        '--hours',
        '--no-progress',
      ]),
    );
    for (const flag of flags) {
      const declared =
        flag === '--no-progress' ? "'--no-progress'" : flag.startsWith('--') ? `${flag} <` : `${flag}, --`;
      expect(produceSource, `meterline produce has no ${flag}`).toContain(declared);
    }
    expect(command).toContain('--brokers kafka-0.kafka:9093,kafka-1.kafka:9093,kafka-2.kafka:9093');
    expect(command).toContain('--customers acme --dimensions api_calls');
    // From a worker pod: it has the Kafka TLS and SASL settings, and its NetworkPolicy allows Kafka.
    expect(notes).toContain(`exec deployment/ml-meterline-worker -- node src/cli/main.ts produce`);
    expect(notes).toContain('service meterline-worker, tag meterline.customer=acme');

    const off = await renderNotes(path.join(VALUES, 'minimal.yaml'));
    expect(off).not.toContain('Kafka needs TLS/SASL');
    expect(off).toContain('Tracing is off');
    expect(off).toContain('customer_mapping_missing');
    expect(off).not.toContain('/marketplace');
  });

  it('with a real AWS endpoint, no command produces an event for a real tenant; the command has a placeholder and says it bills', async () => {
    const produceCommands = (notes: string) =>
      notes
        .replaceAll('\\\n', ' ')
        .split('\n')
        .filter((line) => /\bproduce\b/.test(line) && line.includes('--customers'));
    const cases: [string, string[]][] = [
      ['saas.yaml', []],
      ['full.yaml', []],
      ['minimal.yaml', []],
      // An endpoint override that is still AWS (e.g. a VPC endpoint's name) bills like AWS.
      [
        'full.yaml',
        ['--set', 'aws.meteringEndpoint=https://vpce-0abc.metering.marketplace.us-east-1.vpce.amazonaws.com'],
      ],
      ['full.yaml', ['--set', 'aws.meteringEndpoint=https://metering.marketplace.us-east-1.amazonaws.com']],
    ];
    for (const [file, extra] of cases) {
      const values = valuesOf(file.replace('.yaml', '') as SetName);
      const tenants = Object.keys(values.metering.customers ?? {});
      const notes = await renderNotes(path.join(VALUES, file), extra);
      const commands = produceCommands(notes);
      expect(commands.length, `${file} ${extra}`).toBeGreaterThan(0);
      for (const command of commands) {
        expect(command, `${file} ${extra}`).toMatch(/--customers <tenant-id> /);
        for (const tenant of [...tenants, 'tenant-a']) expect(command).not.toContain(`--customers ${tenant}`);
      }
      expect(notes).toContain('bills');
      for (const tenant of tenants)
        expect(notes, `${file}: ${tenant}`).not.toMatch(new RegExp(`\\b${tenant}\\b`));
    }
    // The emulator: a tenant of the customers file, and the NOTES say nothing is billed.
    const emulated = await renderNotes(path.join(VALUES, 'saas.yaml'), [
      '--set',
      'aws.meteringEndpoint=http://meterline-emulator.metering:8080',
    ]);
    for (const command of produceCommands(emulated)) expect(command).toContain('--customers acme ');
    expect(emulated).toContain('the emulator');
  });

  it('with registration: the URL to give AWS Marketplace and the events endpoint; the wiring is in the README', async () => {
    const notes = await renderNotes(path.join(VALUES, 'full.yaml'));
    expect(notes).toContain('https://billing.example.com/marketplace/register');
    expect(notes).toContain('https://billing.example.com/marketplace/events');
    expect(notes).not.toContain('Nothing exposes it yet');

    // Nothing exposed: the NOTES say so.
    const bare = await renderNotes(path.join(VALUES, 'minimal.yaml'), ['--set', 'registration.enabled=true']);
    expect(bare).toContain('Nothing exposes it yet');
    expect(bare).toContain('https://<your public host>/marketplace/register');

    // The SNS and EventBridge commands the NOTES used to print are in the chart README's "After the install".
    const readme = readFileSync(path.join(CHART, 'README.md'), 'utf8');
    const after = readme.slice(readme.indexOf('## After the install'));
    expect(after).toContain('aws sns subscribe --region us-east-1 --protocol https --topic-arn');
    expect(after).toContain('--notification-endpoint https://<host>/marketplace/events');
    expect(after).toContain('ApiKeyName=x-meterline-api-key');
    expect(after).toContain('--invocation-endpoint https://<host>/marketplace/events --http-method POST');
    expect(after).toContain('"source":["aws.agreement-marketplace"]');
  });
});

describe('values the chart refuses', () => {
  it('has negative value sets', () => {
    expect(BAD.length).toBeGreaterThanOrEqual(8);
  });

  it.each(BAD)('%s is rejected with its message', async (file) => {
    const text = readFileSync(path.join(VALUES, file), 'utf8');
    const expected = [...text.matchAll(/^# expect: (.+)$/gm)].map((m) => m[1] as string);
    expect(expected.length, `${file} names its expected message in "# expect:" lines`).toBeGreaterThan(0);
    const r = await template(path.join(VALUES, file));
    expect(r.code).not.toBe(0);
    for (const fragment of expected) expect(r.stderr).toContain(fragment);
  });
});

describe('chart files', () => {
  it('files/ holds byte-identical copies of deploy/monitoring', () => {
    for (const f of ['alert-rules.yaml', 'grafana-dashboard.json']) {
      const copy = readFileSync(path.join(CHART, 'files', f));
      const canonical = readFileSync(path.join(ROOT, 'deploy/monitoring', f));
      expect(
        copy.equals(canonical),
        `helm/meterline/files/${f} differs from deploy/monitoring/${f}: copy it again`,
      ).toBe(true);
    }
  });

  it('the chart README documents every leaf key of values.yaml', () => {
    const values = parse(readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));
    const readme = readFileSync(path.join(CHART, 'README.md'), 'utf8');
    const leaves = leafPaths(values);
    expect(leaves.length).toBeGreaterThan(50);
    const missing = leaves.filter((key) => !readme.includes(`\`${key}\``));
    expect(missing).toEqual([]);
  });

  it('values.schema.json closes every object it defines', () => {
    const schema = JSON.parse(readFileSync(path.join(CHART, 'values.schema.json'), 'utf8'));
    const open: string[] = [];
    const walk = (node: unknown, at: string) => {
      if (!node || typeof node !== 'object') return;
      const n = node as Obj;
      if (n.type === 'object' && n.properties && n.additionalProperties !== false) open.push(at);
      for (const [k, v] of Object.entries(n)) walk(v, `${at}/${k}`);
    };
    walk(schema, '#');
    expect(open).toEqual([]);
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
  });
});
