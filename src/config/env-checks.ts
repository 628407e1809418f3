/** Checks on the environment beyond the schema: METERLINE_* variables nothing reads (likely typos), broker lists. */
import { ENV_KEYS } from './env-schema.ts';

/**
 * METERLINE_* variables read outside the configuration: by the CLI's tools, the local stack, the tests and
 * the chart (METERLINE_REDIS_PASSWORD is interpolated into REDIS_URL by Kubernetes). Never warned about.
 */
export const OTHER_METERLINE_VARIABLES: ReadonlySet<string> = new Set([
  'METERLINE_CONFIG',
  'METERLINE_REDIS_PASSWORD',
  'METERLINE_TRACING',
  'METERLINE_STACK_HOST',
  'METERLINE_JAVA',
  'METERLINE_NODE_IP',
  'METERLINE_KEEP_STACK',
  'METERLINE_NO_STACK',
  'METERLINE_TESTCONTAINERS',
  'METERLINE_TESTCONTAINERS_IMAGES',
  'METERLINE_FAULT_TESTS',
  'METERLINE_CLUSTER_TEST',
  'METERLINE_TEST_IMAGE',
  'METERLINE_TEST_KILL_AT',
]);

/** One warning per METERLINE_* variable nothing reads, with the closest known name when one is close. */
export function unknownVariableWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = [...ENV_KEYS.filter((k) => k.startsWith('METERLINE_')), ...OTHER_METERLINE_VARIABLES];
  return Object.keys(env)
    .filter((k) => k.startsWith('METERLINE_') && !known.includes(k))
    .sort()
    .map((k) => {
      const [best] = known
        .map((name) => ({ name, d: editDistance(k, name) }))
        .sort((a, b) => a.d - b.d || (a.name < b.name ? -1 : 1));
      const close = best && best.d <= Math.max(2, Math.floor(k.length / 5));
      return `${k} is not a meterline setting${close ? ` (did you mean ${best.name}?)` : ''}`;
    });
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        (row[j] ?? 0) + 1,
        (next[j - 1] ?? 0) + 1,
        (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/** Each entry host:port (IPv6 as [addr]:port); kafkajs would otherwise loop on "Port should be >= 0". */
export function brokerIssues(brokers: string): string[] {
  return brokers
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean)
    .flatMap((b) => {
      const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(b);
      if (m && Number(m[2]) >= 1 && Number(m[2]) <= 65_535) return [];
      const host = m?.[1] ?? b.replace(/:[^:\]]*$/, '');
      return [`KAFKA_BROKERS: "${b}" has no port: write host:port, such as ${host}:9092`];
    });
}
