/** `helm template` of the chart over the minimal value set plus `--set` arguments, for focused chart tests. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { ensureTool, KUBERNETES_VERSION } from '../../deploy/tools/tools.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHART = path.join(ROOT, 'helm/meterline');
const MINIMAL = path.join(ROOT, 'test/chart/values/minimal.yaml');

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects are walked as plain data.
export type Obj = Record<string, any>;

/** Builds or finds helm (cached outside the clone); call from a beforeAll with a long timeout. */
export const helmTool = () =>
  ensureTool('helm', { log: (line) => process.stderr.write(`[chart test] ${line}\n`) });

export function render(
  helm: string,
  args: string[],
): Promise<{ code: number; objects: Obj[]; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      helm,
      [
        'template',
        'ml',
        CHART,
        '--namespace',
        'metering',
        '--kube-version',
        KUBERNETES_VERSION,
        '-f',
        MINIMAL,
        ...args,
      ],
      { maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({
          code: error ? 1 : 0,
          stderr,
          objects: parseAllDocuments(stdout)
            .map((d) => d.toJS() as Obj | null)
            .filter((o): o is Obj => o !== null && typeof o === 'object'),
        }),
    ),
  );
}

export const named = (objects: Obj[], kind: string, name: string): Obj => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} rendered`);
  return found;
};
