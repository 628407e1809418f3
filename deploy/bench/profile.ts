/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`) of the processor child: self time by area (kafkajs,
 * ioredis, meterline src, Node internals, GC, idle) and the top functions by self time.
 */
import { readFileSync } from 'node:fs';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  areas: { area: string; ms: number; share: number }[];
  top: { fn: string; area: string; ms: number; share: number }[];
}

function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle (waiting on I/O)';
  if (fn === '(program)') return 'V8/native (program)';
  if (url.includes('/node_modules/kafkajs/')) return 'kafkajs';
  if (url.includes('/node_modules/ioredis/') || url.includes('/node_modules/@ioredis/')) return 'ioredis';
  if (url.includes('/node_modules/pino')) return 'pino';
  if (url.includes('/node_modules/')) return 'other packages';
  if (url.includes('/src/')) return 'meterline src';
  if (url.includes('/deploy/bench/')) return 'bench runner';
  if (url.startsWith('node:') || url === '') return 'Node internals / builtins';
  return 'other';
}

function shortUrl(url: string): string {
  const i = url.search(/\/(node_modules|src|deploy)\//);
  return i >= 0 ? url.slice(i + 1) : url.replace(/^file:\/\//, '');
}

export function summarizeProfile(file: string, topN = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const areas = new Map<string, number>();
  const fns = new Map<string, { area: string; us: number }>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const a = area(url, functionName);
    total += us;
    areas.set(a, (areas.get(a) ?? 0) + us);
    const key = `${functionName || '(anonymous)'} ${url ? `${shortUrl(url)}:${lineNumber + 1}` : ''}`.trim();
    const f = fns.get(key) ?? { area: a, us: 0 };
    f.us += us;
    fns.set(key, f);
  }
  const share = (us: number) => (total ? us / total : 0);
  return {
    file,
    totalMs: total / 1000,
    areas: [...areas]
      .sort((x, y) => y[1] - x[1])
      .map(([a, us]) => ({ area: a, ms: us / 1000, share: share(us) })),
    top: [...fns]
      .filter(([, f]) => !f.area.startsWith('idle'))
      .sort((x, y) => y[1].us - x[1].us)
      .slice(0, topN)
      .map(([fn, f]) => ({ fn, area: f.area, ms: f.us / 1000, share: share(f.us) })),
  };
}
