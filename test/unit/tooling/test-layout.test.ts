/**
 * The layout of test/ (CONTRIBUTING.md, "The folder says what a test needs"): test/unit/ and
 * test/integration/ mirror the folders of src/ (plus docs/ and tooling/ for checks of the repository), the
 * scenario suites have their own folders, and a unit test reaches no service and starts no other
 * program: npm run test:unit runs test/unit/ with no global setup, so a unit test that needed Kafka or
 * Redis would only fail there, and one that spawned a tool (promtool, knip, openssl, the CLI) would
 * make the unit run take minutes instead of seconds.
 * Imports are read with the TypeScript compiler (the same parser as architecture.test.ts), followed
 * through test/ helpers.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TEST = path.join(ROOT, 'test');
const SRC = path.join(ROOT, 'src');

/** Folders of test/ that hold their own suites rather than mirroring src/. */
const SUITES = new Set(['e2e', 'reliability', 'chart', 'cluster']);
/** Folders of test/unit/ and test/integration/ about the repository rather than a src/ module. */
const REPO_CHECKS = new Set(['docs', 'tooling']);
/** Folders of test/ with no tests: helpers and data. */
const NO_TESTS = new Set(['support', 'fixtures']);

/** What only a service gives: a module of test/support/ or a name it exports, or a package or variable. */
const SERVICE_MODULES = new Set(
  [
    'pipeline-env',
    'containers',
    'global-setup',
    'redis-server',
    'redis-fault-proxy',
    'crash-scenario',
    'child',
    'oauth-broker',
    'tcp-relay',
  ].map((m) => path.join(TEST, 'support', `${m}.ts`)),
);
const SERVICE_NAMES = new Map([
  [
    path.join(TEST, 'support', 'harness.ts'),
    ['stackEnv', 'testKafka', 'readTopic', 'deleteTopics', 'deleteKeys'],
  ],
  [path.join(ROOT, 'deploy', 'stack', 'index.ts'), ['ensureStack', 'ensureServices']],
]);
const SERVICE_PACKAGES = new Set([
  // Another program: a tool built on first use, or the CLI in a child process.
  'node:child_process',
  'child_process',
  'kafkajs',
  'ioredis',
  'testcontainers',
  '@testcontainers/kafka',
  '@testcontainers/redis',
]);
/** The endpoints the global setup puts in the environment. */
const SERVICE_ENV =
  /process\.env(?:\.|\[')(KAFKA_BROKERS|REDIS_URL|SCHEMA_REGISTRY_URL|METERLINE_JAEGER_URL)\b/;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : files(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

const SRC_FOLDERS = new Set(readdirSync(SRC).filter((n) => statSync(path.join(SRC, n)).isDirectory()));

/** Why a test file is in the wrong place, or undefined. `file` is relative to test/. */
function misplaced(file: string): string | undefined {
  const parts = file.split(path.sep);
  const [top, second] = parts;
  if (parts.length === 1) return 'a test file directly in test/ (put it in test/unit/ or test/integration/)';
  if (top === 'unit' || top === 'integration') {
    if (parts.length === 2) {
      // A test of a file at the top of src/ (src/log.ts) sits at the top of test/unit/ or test/integration/.
      const source = path.join(SRC, (second as string).replace(/\.test\.ts$/, '.ts'));
      return existsSync(source) ? undefined : `test/${top}/${second} tests no file at the top of src/`;
    }
    if (SRC_FOLDERS.has(second as string) || REPO_CHECKS.has(second as string)) return undefined;
    return `test/${top}/${second}/ mirrors no folder of src/ (nor is it ${[...REPO_CHECKS].join(' or ')})`;
  }
  if (SUITES.has(top as string)) return undefined;
  if (NO_TESTS.has(top as string)) return `test/${top}/ holds helpers and data, no tests`;
  return `test/${top}/ is neither test/unit/<src folder>, test/integration/<src folder> nor a suite (${[...SUITES].join(', ')})`;
}

interface Import {
  target: string; // an absolute path for a relative import, else the package name
  names: string[];
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false);
  const found: Import[] = [];
  const visit = (node: ts.Node) => {
    // A type-only import loads nothing at run time.
    const typeOnly = ts.isImportDeclaration(node)
      ? node.importClause?.isTypeOnly
      : ts.isExportDeclaration(node) && node.isTypeOnly;
    if (
      !typeOnly &&
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      const spec = node.moduleSpecifier.text;
      const target = spec.startsWith('.') ? path.resolve(path.dirname(file), spec) : spec;
      const names: string[] = [];
      const bindings = ts.isImportDeclaration(node) ? node.importClause?.namedBindings : node.exportClause;
      if (bindings && (ts.isNamedImports(bindings) || ts.isNamedExports(bindings))) {
        for (const e of bindings.elements) if (!e.isTypeOnly) names.push((e.propertyName ?? e.name).text);
      }
      found.push({ target, names });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] &&
      ts.isStringLiteral(node.arguments[0])
    ) {
      const spec = node.arguments[0].text;
      found.push({
        target: spec.startsWith('.') ? path.resolve(path.dirname(file), spec) : spec,
        names: ['*'],
      });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** What in a unit test, or in a test/ helper it reaches, needs a service. */
function serviceUses(entry: string): string[] {
  const uses: string[] = [];
  const seen = new Set<string>();
  const rel = (f: string) => path.relative(ROOT, f);
  const walk = (file: string, via: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const where = via ? `${rel(file)} (through ${via})` : rel(file);
    const env = SERVICE_ENV.exec(readFileSync(file, 'utf8'));
    if (env) uses.push(`${where} reads ${env[1]}`);
    for (const { target, names } of importsOf(file)) {
      if (SERVICE_PACKAGES.has(target)) uses.push(`${where} imports ${target}`);
      if (SERVICE_MODULES.has(target)) uses.push(`${where} imports ${rel(target)}`);
      const denied = SERVICE_NAMES.get(target);
      const bad = names.filter((n) => denied?.includes(n) || (denied && n === '*'));
      if (bad.length) uses.push(`${where} imports ${bad.join(', ')} from ${rel(target)}`);
      const local = path.relative(TEST, target);
      if (!local.startsWith('..') && !path.isAbsolute(local)) {
        const [top] = local.split(path.sep);
        if (top !== 'unit' && top !== 'support' && top !== 'fixtures')
          uses.push(`${where} imports ${rel(target)}`);
        // harness.ts holds both kinds of helper: the names imported from it decide (SERVICE_NAMES).
        else if (target.endsWith('.ts') && !SERVICE_NAMES.has(target)) walk(target, via || rel(file));
      }
    }
  };
  walk(entry, '');
  return uses;
}

describe('the layout of test/', () => {
  const tests = files(TEST)
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => path.relative(TEST, f));

  it('finds the test files, unit and integration ones among them', () => {
    // A walk that found nothing would pass every rule below.
    expect(tests.length).toBeGreaterThan(100);
    expect(tests.filter((t) => t.startsWith(`unit${path.sep}`)).length).toBeGreaterThan(30);
    expect(tests.filter((t) => t.startsWith(`integration${path.sep}`)).length).toBeGreaterThan(30);
  });

  it('puts every test in test/unit/ or test/integration/ under a folder of src/, or in a suite', () => {
    const wrong = tests.flatMap((t) => {
      const why = misplaced(t);
      return why ? [`test/${t}: ${why}`] : [];
    });
    expect(wrong).toEqual([]);
  });

  it('keeps services out of test/unit/: no Kafka, Redis, registry, stack or child process, directly or through a helper', () => {
    const unitFiles = files(path.join(TEST, 'unit'));
    expect(unitFiles.length).toBeGreaterThan(30);
    expect(unitFiles.flatMap(serviceUses)).toEqual([]);
  });

  it('sees a service use where there is one', () => {
    // The rule above must be able to fail: an integration test that reads the stack's Redis.
    expect(serviceUses(path.join(TEST, 'integration', 'state', 'window-store.test.ts'))).not.toEqual([]);
    // And one that runs a tool in a child process (promtool).
    expect(serviceUses(path.join(TEST, 'integration', 'observability', 'monitoring.test.ts'))).toContain(
      'test/integration/observability/monitoring.test.ts imports node:child_process',
    );
  });
});
