/**
 * The shipped alert rules and Grafana dashboard only name metrics meterline really exports, with labels
 * it really sets: a renamed metric must break this test, not an alert in production.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { metrics, register } from '../../src/observability/metrics.ts';

const read = (p: string) => readFileSync(new URL(`../../deploy/monitoring/${p}`, import.meta.url), 'utf8');

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
      ]),
    );
    for (const r of all) {
      checkExpr(r.expr, r.alert);
      expect(r.annotations.summary.length).toBeGreaterThan(10);
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
