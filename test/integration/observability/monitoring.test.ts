/**
 * The shipped alert rules and Grafana dashboard only name metrics meterline really exports, with labels
 * it really sets: a renamed metric must break this test, not an alert in production.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Ajv } from 'ajv';
import { createGenerator } from 'ts-json-schema-generator';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ensureTool } from '../../../deploy/tools/tools.ts';
import { metrics, register } from '../../../src/observability/metrics.ts';

const monitoringDir = fileURLToPath(new URL('../../../deploy/monitoring/', import.meta.url));
const run = promisify(execFile);
const require = createRequire(import.meta.url);

/** Runs promtool (built from the Go module proxy on first use, about 6 min cold); never throws. */
async function promtool(args: string[]): Promise<{ code: number; output: string }> {
  const bin = await ensureTool('promtool');
  try {
    const { stdout, stderr } = await run(bin, args, { cwd: monitoringDir });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const read = (p: string) => readFileSync(new URL(`../../../deploy/monitoring/${p}`, import.meta.url), 'utf8');

/** Metric names meterline exports, with the suffixes Prometheus derives for histograms. */
function exported(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of Object.values(metrics)) {
    const { name, labelNames } = m as unknown as { name: string; labelNames: string[] };
    const labels = new Set([...labelNames, 'le']);
    out.set(name, labels);
    for (const suffix of ['_bucket', '_sum', '_count']) out.set(`${name}${suffix}`, labels);
  }
  return out;
}

/** `name{label=...}` and bare `meterline_*` names in a PromQL expression. */
function references(expr: string): { name: string; labels: string[] }[] {
  return [...expr.matchAll(/(meterline_[a-z_]+)(\{([^}]*)\})?/g)].map((m) => ({
    name: m[1] as string,
    labels: [...(m[3] ?? '').matchAll(/([a-z_]+)\s*(=~|!=|=)/g)].map((l) => l[1] as string),
  }));
}

function checkExpr(expr: string, where: string): void {
  const known = exported();
  const refs = references(expr);
  expect(refs.length, `${where} names no meterline metric`).toBeGreaterThan(0);
  for (const r of refs) {
    expect(known.has(r.name), `${where}: ${r.name} is not exported`).toBe(true);
    for (const l of r.labels)
      expect(known.get(r.name)?.has(l), `${where}: ${r.name} has no label ${l}`).toBe(true);
  }
}

describe('monitoring as shipped', () => {
  it('alert rules name only exported metrics and labels, each with a summary', () => {
    const rules = parse(read('alert-rules.yaml')) as {
      groups: { rules: { alert: string; expr: string; annotations: { summary: string } }[] }[];
    };
    const all = rules.groups.flatMap((g) => g.rules);
    expect(all.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        'MeterlineHourPastHalfItsDeadline',
        'MeterlineDuplicateRecord',
        'MeterlineDeadLetters',
        // Fleet monitoring (issue 18).
        'MeterlineNoWorker',
        'MeterlineNoProcessor',
        'MeterlineSubmissionsWaiting',
        'MeterlineSubmissionBacklogNearDeadline',
        'MeterlineClockSkew',
        'MeterlineDeadLetterTopicGrowing',
        'MeterlineBillingGapMissed',
        'MeterlineBillingGapLate',
      ]),
    );
    for (const r of all) {
      checkExpr(r.expr, r.alert);
      expect(r.annotations.summary.length).toBeGreaterThan(10);
    }
  });

  it('alert rules pass promtool check rules, and their unit tests fire as intended', async () => {
    const check = await promtool(['check', 'rules', 'alert-rules.yaml']);
    expect(check.output).toMatch(/SUCCESS: \d+ rules found/);
    expect(check.code).toBe(0);
    const tests = await promtool(['test', 'rules', 'alert-rules.test.yaml']);
    expect(tests.output).toContain('SUCCESS');
    expect(tests.code).toBe(0);
  }, 900_000);

  it('promtool rejects a broken rule: the check above can fail', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(`${tmpdir()}/rules-`);
    writeFileSync(
      `${dir}/bad.yaml`,
      'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(meterline_events_total[5m]) > \n',
    );
    const check = await promtool(['check', 'rules', `${dir}/bad.yaml`]);
    expect(check.code).not.toBe(0);
    expect(check.output).toMatch(/parse error|unexpected/i);
  }, 900_000);

  it('the Grafana dashboard validates against Grafana’s dashboard schema (from @grafana/schema)', () => {
    // Grafana publishes its dashboard model as generated TypeScript; turn that into a JSON Schema here.
    const schema = createGenerator({
      path: require
        .resolve('@grafana/schema')
        .replace(/dist\/.*$/, 'dist/types/raw/dashboard/x/types.gen.d.ts'),
      type: 'Dashboard',
      skipTypeCheck: true,
    }).createSchema('Dashboard');
    const ajv = new Ajv({ strict: false, allErrors: true });
    const validate = ajv.compile(schema);
    const shipped = JSON.parse(read('grafana-dashboard.json')) as { panels: { gridPos: { w: unknown } }[] };
    expect(validate(shipped), JSON.stringify(validate.errors?.slice(0, 5))).toBe(true);
    // The check can fail: a mistyped field is refused.
    const broken = structuredClone(shipped);
    (broken.panels[0] as { gridPos: { w: unknown } }).gridPos.w = 'wide';
    expect(validate(broken)).toBe(false);
    expect(validate.errors?.map((e) => `${e.instancePath} ${e.message}`)).toContain(
      '/panels/0/gridPos/w must be number',
    );
  }, 60_000);

  it('the Grafana dashboard is a valid dashboard model', () => {
    const d = JSON.parse(read('grafana-dashboard.json')) as Record<string, unknown> & {
      panels: Record<string, unknown>[];
    };
    expect(typeof d.title).toBe('string');
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of d.panels) {
      expect(typeof p.id).toBe('number');
      expect(['timeseries', 'stat', 'gauge', 'table', 'bargauge', 'text']).toContain(p.type);
      const g = p.gridPos as { x: number; y: number; w: number; h: number };
      expect(g.x + g.w).toBeLessThanOrEqual(24);
      expect(g.w).toBeGreaterThan(0);
      expect(g.h).toBeGreaterThan(0);
      expect((p.targets as { refId: string; expr: string }[]).every((t) => t.refId && t.expr)).toBe(true);
    }
  });

  it('the Grafana dashboard queries only exported metrics and labels', () => {
    const dashboard = JSON.parse(read('grafana-dashboard.json')) as {
      uid: string;
      panels: { title: string; targets: { expr: string }[] }[];
    };
    expect(dashboard.uid).toBe('meterline');
    for (const p of dashboard.panels) for (const t of p.targets) checkExpr(t.expr, p.title);
  });

  it('the registry exports every metric it defines', async () => {
    const names = (await register.getMetricsAsJSON()).map((m) => m.name);
    for (const m of Object.values(metrics)) expect(names).toContain((m as unknown as { name: string }).name);
  });
});
