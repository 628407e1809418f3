/**
 * Amazon MSK with IAM in the chart: `kafka.sasl.mechanism: aws-msk-iam` needs no Secret, gives every pod
 * that reaches Kafka an IAM role (the worker its own, the processor and the console `kafkaRoleArn`, the topics
 * Job the ServiceAccount named for it), and the configuration each role then loads signs in with OAUTHBEARER.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Role } from '../../src/config/config.ts';
import { helmTool, named, render } from './render.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PROCESSOR_ROLE = 'arn:aws:iam::123456789012:role/meterline-kafka';
const WORKER_ROLE = 'arn:aws:iam::123456789012:role/meterline-worker';
let helm: string;

const MSK = [
  '--set',
  'kafka.sasl.mechanism=aws-msk-iam',
  '--set',
  `serviceAccount.roleArn=${WORKER_ROLE}`,
  '--set',
  `serviceAccount.kafkaRoleArn=${PROCESSOR_ROLE}`,
];

beforeAll(async () => {
  helm = await helmTool();
}, 20 * 60_000);

describe('Amazon MSK with IAM in the chart', () => {
  it('needs no Secret, and each pod that reaches Kafka signs in with an IAM role', async () => {
    const r = await render(helm, [
      ...MSK,
      '--set',
      'topics.create.enabled=true',
      '--set',
      'topics.create.serviceAccountName=meterline-topics',
    ]);
    expect(r.stderr).toBe('');
    const role = (sa: string) =>
      named(r.objects, 'ServiceAccount', sa).metadata.annotations?.['eks.amazonaws.com/role-arn'];
    expect(role('ml-meterline-worker')).toBe(WORKER_ROLE);
    expect(role('ml-meterline-processor')).toBe(PROCESSOR_ROLE);
    const job = named(r.objects, 'Job', 'ml-meterline-topics');
    expect(job.spec.template.spec.serviceAccountName).toBe('meterline-topics');
    for (const [name, roles] of [
      ['ml-meterline-processor', ['processor']],
      ['ml-meterline-worker', ['worker']],
    ] as const) {
      const container = named(r.objects, 'Deployment', name).spec.template.spec.containers[0];
      const env: Record<string, string> = {};
      for (const from of container.envFrom ?? [])
        Object.assign(env, named(r.objects, 'ConfigMap', from.configMapRef.name).data);
      for (const e of container.env ?? []) {
        // Nothing of Kafka comes from a Secret.
        expect(e.name.startsWith('KAFKA_') && e.valueFrom !== undefined, e.name).toBe(false);
        if (e.value !== undefined) env[e.name] = e.value;
      }
      expect(env.KAFKA_SASL_MECHANISM).toBe('aws-msk-iam');
      expect(env).not.toHaveProperty('KAFKA_SASL_USERNAME');
      const loaded = loadConfig([...roles] as Role[], {
        ...env,
        METERLINE_PLAN: path.join(ROOT, 'deploy/demo/plan.json'),
        METERLINE_CUSTOMERS: path.join(ROOT, 'deploy/demo/customers.json'),
      });
      expect(loaded.kafka.security.sasl?.mechanism).toBe('oauthbearer');
      expect(loaded.kafka.security.ssl).toBe(true);
    }
  });

  it('refuses a topics Job without a ServiceAccount to sign in with, and an unknown mechanism', async () => {
    const r = await render(helm, [...MSK, '--set', 'topics.create.enabled=true']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      'topics.create.serviceAccountName: required with kafka.sasl.mechanism aws-msk-iam',
    );
    const bad = await render(helm, ['--set', 'kafka.sasl.mechanism=aws-iam']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('/kafka/sasl/mechanism');
  });
});
