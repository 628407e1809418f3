/**
 * The Helm values the README and docs/ show (```yaml blocks that start with `# my-values.yaml`) are
 * accepted by the chart: `helm template` with each renders, so its schema and templates take them as written.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureTool } from '../../deploy/tools/tools.ts';
import { docFiles, fencedBlocks, ROOT, readDoc } from '../support/markdown.ts';

const examples = docFiles().flatMap((file) =>
  fencedBlocks(file, readDoc(file))
    .filter((b) => b.lang === 'yaml' && b.text.startsWith('# my-values.yaml'))
    .map((b) => [`${b.file}:${b.line}`, b.text] as const),
);

describe('Helm values in the documentation', () => {
  let helm: string;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'docs-values-'));
  beforeAll(async () => {
    helm = await ensureTool('helm');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('finds the README example and the full one', () => expect(examples.length).toBeGreaterThanOrEqual(2));

  it.each(examples)('%s renders with helm template', async (where, text) => {
    const file = path.join(dir, `${where.replace(/[/:.]/g, '_')}.yaml`);
    writeFileSync(file, text);
    const result = await new Promise<{ code: number; stderr: string; stdout: string }>((resolve) =>
      execFile(
        helm,
        ['template', 'meterline', path.join(ROOT, 'helm/meterline'), '-n', 'metering', '-f', file],
        { maxBuffer: 32 * 1024 * 1024 },
        (error, stdout, stderr) => resolve({ code: error ? 1 : 0, stdout, stderr }),
      ),
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/kind: Deployment/);
  });
});
