/**
 * The layering of src/ (docs/architecture.md), checked over the import graph: the stages of the data path
 * import the core (metering/), the shared infrastructure and their own folder, never another stage; the
 * core and the shared infrastructure import no stage and no application code. The application layer
 * (app/, cli/) and the tools beside it (reconcile/, emulator/, produce/) may import anything.
 * Imports are read with the TypeScript compiler's pre-processor (type-only imports count too).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../../../src/', import.meta.url));

const STAGES = new Set(['ingest', 'window', 'commit', 'submit', 'subscribe', 'dlq']);
const CORE = new Set(['metering']);
const SHARED = new Set([
  'kafka',
  'redis',
  'state',
  'config',
  'observability',
  'time',
  'engine',
  'errors.ts',
  'log.ts',
  'redact.ts',
]);

/** The top-level folder (or file) of src/ a path is in. */
const unit = (file: string) => path.relative(SRC, file).split(path.sep)[0] as string;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

interface Edge {
  from: string;
  to: string;
}

/** Every relative import between two files of src/. */
function importGraph(): Edge[] {
  return sources(SRC).flatMap((from) =>
    ts
      .preProcessFile(readFileSync(from, 'utf8'), true, true)
      .importedFiles.filter((i) => i.fileName.startsWith('.'))
      .map((i) => ({ from, to: path.resolve(path.dirname(from), i.fileName) }))
      .filter((e) => e.to.startsWith(SRC)),
  );
}

/** Why an import breaks the layering, or undefined when it may be made. */
function violation({ from, to }: Edge): string | undefined {
  const a = unit(from);
  const b = unit(to);
  if (a === b || CORE.has(b) || SHARED.has(b)) {
    return undefined;
  }
  if (STAGES.has(a)) return `stage ${a} imports ${STAGES.has(b) ? 'stage' : 'application code'} ${b}`;
  if (CORE.has(a) || SHARED.has(a)) return `${CORE.has(a) ? 'the core' : 'shared'} ${a} imports ${b}`;
  return undefined;
}

describe('architecture', () => {
  const edges = importGraph();

  it('reads the import graph of src/', () => {
    // A parser that found nothing would pass every rule below.
    expect(edges.length).toBeGreaterThan(200);
    const units = new Set(edges.map((e) => unit(e.from)));
    for (const folder of [...STAGES, ...CORE, 'app']) expect(units, folder).toContain(folder);
  });

  it('no stage imports another stage; the core and the shared infrastructure import no stage', () => {
    const broken = edges
      .map((e) => [e, violation(e)] as const)
      .filter(([, why]) => why !== undefined)
      .map(([e, why]) => `${path.relative(SRC, e.from)} -> ${path.relative(SRC, e.to)}: ${why}`);
    expect(broken).toEqual([]);
  });
});
