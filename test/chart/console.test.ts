/**
 * The console in the chart (issue 22): off by default; when on, a Deployment, a Service and an optional
 * Ingress, its sign-in tokens only by Secret reference, and a NetworkPolicy of its own. Every object's
 * validity (kubeconform) is checked by chart.test.ts on the `full` value set, which runs the console.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { helmTool, named, type Obj, render } from './render.ts';

let helm: string;

beforeAll(async () => {
  helm = await helmTool();
}, 20 * 60_000);

describe('the console in the chart', () => {
  it('is off by default: no console object', async () => {
    const r = await render(helm, []);
    expect(r.code, r.stderr).toBe(0);
    expect(
      r.objects.filter((o) => o.metadata?.labels?.['app.kubernetes.io/component'] === 'console'),
    ).toEqual([]);
  });

  it('on, with a token Secret: Deployment, Service, Ingress and NetworkPolicy, the tokens by reference', async () => {
    const r = await render(helm, [
      '--set',
      'console.enabled=true',
      '--set',
      'console.tokens.existingSecret=console-tokens',
      '--set',
      'console.ingress.enabled=true',
      '--set',
      'console.ingress.hosts[0]=console.example.com',
      '--set',
      'console.jaegerUrl=http://jaeger-query.tracing:16686',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const d = named(r.objects, 'Deployment', 'ml-meterline-console');
    expect(d.spec.replicas).toBe(1);
    const c = d.spec.template.spec.containers[0];
    expect(c.args).toEqual(['console']);
    const env = new Map<string, Obj>(c.env.map((e: Obj) => [e.name, e]));
    expect(env.get('METERLINE_CONSOLE_TOKENS')).toEqual({
      name: 'METERLINE_CONSOLE_TOKENS',
      valueFrom: { secretKeyRef: { name: 'console-tokens', key: 'tokens' } },
    });
    expect(env.get('METERLINE_CONSOLE_PORT')?.value).toBe('9470');
    expect(env.get('METERLINE_JAEGER_URL')?.value).toBe('http://jaeger-query.tracing:16686');
    expect(c.ports.map((p: Obj) => [p.name, p.containerPort])).toEqual([
      ['http', 9470],
      ['metrics', 9464],
    ]);
    const svc = named(r.objects, 'Service', 'ml-meterline-console');
    expect(svc.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
    const ingress = named(r.objects, 'Ingress', 'ml-meterline-console');
    expect(ingress.spec.rules[0].host).toBe('console.example.com');
    expect(ingress.spec.rules[0].http.paths[0]).toMatchObject({
      path: '/',
      backend: { service: { name: 'ml-meterline-console', port: { number: 80 } } },
    });
    const np = named(r.objects, 'NetworkPolicy', 'ml-meterline-console');
    const egressPorts = np.spec.egress.flatMap((e: Obj) => e.ports.map((p: Obj) => p.port));
    expect(egressPorts).toEqual(expect.arrayContaining([9092, 6379, 16686, 53]));
    expect(egressPorts).not.toContain(443);
    expect(np.spec.ingress.map((i: Obj) => i.ports[0].port)).toEqual(['http', 'metrics']);
    expect(r.objects.filter((o) => o.kind === 'Secret')).toEqual([]);
  });

  it('refuses to render a console open to anyone, or on the ops port', async () => {
    const open = await render(helm, ['--set', 'console.enabled=true']);
    expect(open.code).not.toBe(0);
    expect(open.stderr).toContain('the console does not start open');
    const clash = await render(helm, [
      '--set',
      'console.enabled=true',
      '--set',
      'console.identityHeader=X-Forwarded-User',
      '--set',
      'console.port=9464',
    ]);
    expect(clash.code).not.toBe(0);
    expect(clash.stderr).toContain('console.port: 9464 is already ops.port');
  });

  it('refuses a token value in the values: only a Secret reference', async () => {
    const r = await render(helm, [
      '--set',
      'console.enabled=true',
      '--set',
      'console.tokens.value=ana:operator:x',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/additional properties 'value' not allowed|value/);
  });
});
