/** deploy/iam: each policy grants exactly the Metering call its role makes; the IRSA trust is scoped to one ServiceAccount. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const IAM = fileURLToPath(new URL('../../deploy/iam/', import.meta.url));

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource?: string;
  Principal?: Record<string, string>;
  Condition?: Record<string, Record<string, string>>;
}
const load = (file: string) =>
  JSON.parse(readFileSync(`${IAM}${file}`, 'utf8')) as { Version: string; Statement: Statement[] };
const actions = (file: string) => load(file).Statement.flatMap((s) => s.Action);

describe('deploy/iam policies', () => {
  it.each([
    ['worker-policy-saas.json', ['aws-marketplace:BatchMeterUsage']],
    ['worker-policy-container.json', ['aws-marketplace:MeterUsage']],
    ['registration-policy-saas.json', ['aws-marketplace:ResolveCustomer', 'aws-marketplace:GetEntitlements']],
  ])('%s allows exactly %j', (file, expected) => {
    const policy = load(file);
    expect(policy.Version).toBe('2012-10-17');
    expect(actions(file)).toEqual(expected);
    for (const s of policy.Statement) {
      expect(s.Effect).toBe('Allow');
      // The Metering actions have no resource-level permissions.
      expect(s.Resource).toBe('*');
    }
  });

  it('the IRSA trust policy lets only the worker ServiceAccount assume the role, through STS', () => {
    const text = readFileSync(`${IAM}irsa-trust-policy.json`, 'utf8');
    const placeholders = [...new Set([...text.matchAll(/\$\{([A-Z_]+)\}/g)].map((m) => m[1]))].sort();
    expect(placeholders).toEqual([
      'AWS_ACCOUNT_ID',
      'AWS_PARTITION',
      'NAMESPACE',
      'OIDC_PROVIDER',
      'SERVICE_ACCOUNT',
    ]);
    const values: Record<string, string> = {
      AWS_PARTITION: 'aws',
      AWS_ACCOUNT_ID: '123456789012',
      OIDC_PROVIDER: 'oidc.example/id/ABC',
      NAMESPACE: 'metering',
      SERVICE_ACCOUNT: 'ml-meterline-worker',
    };
    const filled = JSON.parse(text.replace(/\$\{([A-Z_]+)\}/g, (_, k: string) => values[k] ?? '')) as {
      Statement: Statement[];
    };
    expect(filled.Statement).toHaveLength(1);
    const [s] = filled.Statement as [Statement];
    expect(s.Action).toBe('sts:AssumeRoleWithWebIdentity');
    expect(s.Principal).toEqual({ Federated: 'arn:aws:iam::123456789012:oidc-provider/oidc.example/id/ABC' });
    expect(s.Condition).toEqual({
      StringEquals: {
        'oidc.example/id/ABC:sub': 'system:serviceaccount:metering:ml-meterline-worker',
        'oidc.example/id/ABC:aud': 'sts.amazonaws.com',
      },
    });
  });

  it('the README says which ServiceAccount gets which role, and the chart annotates each with its own', () => {
    const readme = readFileSync(`${IAM}README.md`, 'utf8');
    const row = (serviceAccount: string) =>
      readme.split('\n').find((l) => l.startsWith(`| \`<release>-meterline-${serviceAccount}\``)) ?? '';
    expect(row('worker')).toContain('worker-policy-saas.json');
    expect(row('worker')).toContain('worker-policy-container.json');
    expect(row('worker')).toContain('`serviceAccount.roleArn`');
    expect(row('registration')).toContain('registration-policy-saas.json');
    expect(row('registration')).toContain('`registration.serviceAccount.roleArn`');
    expect(row('registration')).not.toContain('worker-policy');
    expect(row('processor')).not.toContain('.json');
    const values = readFileSync(new URL('../../helm/meterline/values.yaml', import.meta.url), 'utf8');
    expect(values).toMatch(
      /^registration:\n(?: {2}.*\n|\s*\n)*? {2}serviceAccount:\n(?: {4}.*\n)*? {4}roleArn: ""/m,
    );
  });

  it('the Pod Identity trust policy trusts the EKS Pod Identity service', () => {
    const [s] = load('pod-identity-trust-policy.json').Statement as [Statement];
    expect(s.Principal).toEqual({ Service: 'pods.eks.amazonaws.com' });
    expect(s.Action).toEqual(['sts:AssumeRole', 'sts:TagSession']);
  });
});
