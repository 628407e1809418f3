/**
 * A Helm post-renderer for the cluster test (`helm install --post-renderer`): reads the rendered manifests on
 * stdin and adds to every container of every Deployment and Job:
 *
 *   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY = test   the emulator needs a SigV4 signature, not real keys; the
 *                                                      chart (rightly) never takes static keys, and there is no
 *                                                      IRSA webhook on the test node
 *   AWS_EC2_METADATA_DISABLED = true                   the SDK's credential chain must never try an instance
 *                                                      metadata address from the test node
 *
 * Everything else passes through unchanged. Run as `node test/cluster/post-render.ts`.
 */
import { readFileSync } from 'node:fs';
import { parseAllDocuments, stringify } from 'yaml';

export const TEST_AWS_ENV = [
  { name: 'AWS_ACCESS_KEY_ID', value: 'test' },
  { name: 'AWS_SECRET_ACCESS_KEY', value: 'test' },
  { name: 'AWS_EC2_METADATA_DISABLED', value: 'true' },
];

type Container = { env?: { name: string }[] };
type Manifest = {
  kind?: string;
  spec?: { template?: { spec?: { containers?: Container[]; initContainers?: Container[] } } };
};

export function addTestAwsEnv(manifests: string): string {
  const out: string[] = [];
  for (const doc of parseAllDocuments(manifests)) {
    const m = doc.toJS() as Manifest | null;
    if (!m) continue;
    if (m.kind === 'Deployment' || m.kind === 'Job') {
      const pod = m.spec?.template?.spec;
      for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
        const env = (c.env ?? []).filter((e) => !TEST_AWS_ENV.some((t) => t.name === e.name));
        c.env = [...env, ...TEST_AWS_ENV];
      }
    }
    out.push(stringify(m, { lineWidth: 0 }));
  }
  return out.map((d) => `---\n${d}`).join('');
}

if (import.meta.main) {
  process.stdout.write(addTestAwsEnv(readFileSync(0, 'utf8')));
}
