/**
 * Builds, caches and hands out the Go tools the project needs (jaeger, helm, kubeconform, promtool) and offline
 * Kubernetes + CRD JSON schemas for kubeconform. Importable and a CLI:
 *
 *   node deploy/tools/tools.ts ensure <name...|all> [--force]   build what is missing; prints `name<TAB>path`
 *   node deploy/tools/tools.ts path <name>                      prints the path if built, exit 1 if not
 *   node deploy/tools/tools.ts kubeconform [args...]            strict kubeconform with the offline schemas
 *
 * Everything is cached outside the clone (CI starts from a fresh clone every time): Go's default module and build
 * caches, and `${XDG_CACHE_HOME:-~/.cache}/meterline/tools/`, one versioned dir per tool
 * (`<name>-<version>/bin/<name>`). A build runs in a temp dir under an exclusive lock file, writes its stamp
 * (`.complete`) last and is renamed into place, so a half-finished build is never taken for a finished one and
 * two processes never build the same tool at once: the second waits, then reuses the first one's result.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive, withFileLock } from './lock.ts';

export type ToolName = 'jaeger' | 'helm' | 'kubeconform' | 'promtool';
export const TOOL_NAMES: readonly ToolName[] = ['jaeger', 'helm', 'kubeconform', 'promtool'];

export interface EnsureOptions {
  /** Progress lines ("building jaeger v1.76.0 …", "jaeger ready in 512 s"). */
  log?: (line: string) => void;
  /** Rebuild even when a finished build is cached. */
  force?: boolean;
}

/** The Kubernetes version of our cluster: helm's default KubeVersion and kubeconform's schemas follow it. */
export const KUBERNETES_VERSION = '1.35.0';
const KUBE_MINOR = KUBERNETES_VERSION.split('.')[1] as string;
/** PyPI package that bundles the Kubernetes JSON schemas (1.37.0 bundles Kubernetes 1.25–1.37). */
export const KUBERNETES_VALIDATE_VERSION = '1.37.0';
/** Go module whose zip holds the prometheus-operator CRDs (ServiceMonitor, PrometheusRule, PodMonitor, …). */
export const PROMETHEUS_OPERATOR_VERSION = 'v0.85.0';
const PROMETHEUS_OPERATOR_MODULE = 'github.com/prometheus-operator/prometheus-operator';
const KUBECONFORM_MODULE = 'github.com/yannh/kubeconform';

interface ToolSpec {
  name: ToolName;
  module: string;
  version: string;
  pkg: string;
  /**
   * `install`: `go install pkg@version` (honours the module's go.mod exactly).
   * `tool-module`: a throwaway module with `go get -tool` then `go build`, for modules whose go.mod has replace
   * directives (which `go install pkg@version` refuses); those replaces are copied into the throwaway module.
   */
  method: 'install' | 'tool-module';
  ldflags: string[];
  /** Cold build time measured on 2 cores (minutes), for the progress message. */
  coldMinutes: number;
  /** Smoke test run on the fresh binary before it is published: args, and a pattern its output must match. */
  smoke: { args: string[]; expect: RegExp };
}

const TOOLS: Record<ToolName, ToolSpec> = {
  jaeger: {
    name: 'jaeger',
    module: 'github.com/jaegertracing/jaeger',
    version: 'v1.76.0',
    pkg: 'github.com/jaegertracing/jaeger/cmd/jaeger',
    method: 'tool-module',
    // v1.76.0 of the module is the Jaeger v2.13.0 binary (CHANGELOG: "v1.76.0 / v2.13.0").
    ldflags: ['-s', '-w', '-X', 'github.com/jaegertracing/jaeger/internal/version.latestVersion=v2.13.0'],
    coldMinutes: 9,
    smoke: { args: ['--help'], expect: /Jaeger backend v2/ },
  },
  helm: {
    name: 'helm',
    module: 'helm.sh/helm/v3',
    version: 'v3.22.0',
    pkg: 'helm.sh/helm/v3/cmd/helm',
    method: 'install',
    // The release Makefile's -X flags. The default KubeVersion (used by `helm template`/`lint` without
    // --kube-version) is 1.<KUBE_MINOR>, our cluster's version, rather than the release's 1.37 (its client-go
    // minor) or the plain `go install` fallback 1.20.
    ldflags: [
      '-s',
      '-w',
      '-X',
      'helm.sh/helm/v3/internal/version.version=v3.22.0',
      '-X',
      'helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1',
      '-X',
      `helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${KUBE_MINOR}`,
      '-X',
      'helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1',
      '-X',
      `helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${KUBE_MINOR}`,
    ],
    coldMinutes: 3,
    smoke: { args: ['version'], expect: /Version:"v3\.22\.0"/ },
  },
  kubeconform: {
    name: 'kubeconform',
    module: KUBECONFORM_MODULE,
    version: 'v0.7.0',
    pkg: 'github.com/yannh/kubeconform/cmd/kubeconform',
    method: 'install',
    ldflags: ['-s', '-w', '-X', 'main.version=v0.7.0'],
    coldMinutes: 1,
    smoke: { args: ['-v'], expect: /v0\.7\.0/ },
  },
  promtool: {
    name: 'promtool',
    module: 'github.com/prometheus/prometheus',
    // Prometheus 3.16.0 (the module's VERSION file); Go module versions are v0.3XX.Y for Prometheus 3.XX.Y.
    version: 'v0.316.0',
    pkg: 'github.com/prometheus/prometheus/cmd/promtool',
    method: 'install',
    ldflags: ['-s', '-w', '-X', 'github.com/prometheus/common/version.Version=3.16.0'],
    coldMinutes: 6,
    smoke: { args: ['--version'], expect: /promtool, version 3\.16\.0/ },
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Cache layout

/** `${XDG_CACHE_HOME:-~/.cache}/meterline/tools` */
export function toolsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'meterline', 'tools');
}

const bare = (version: string) => version.replace(/^v/, '');
const toolDir = (spec: ToolSpec) => path.join(toolsCacheDir(), `${spec.name}-${bare(spec.version)}`);
const toolBin = (spec: ToolSpec) => path.join(toolDir(spec), 'bin', spec.name);
const logFile = (id: string) => path.join(toolsCacheDir(), 'logs', `${id}.log`);
const STAMP = '.complete';
const SCHEMAS_ID = `k8s-schemas-${KUBERNETES_VERSION}`;
const schemasDir = () => path.join(toolsCacheDir(), SCHEMAS_ID);
const venvHome = () => path.join(toolsCacheDir(), `kubernetes-validate-${KUBERNETES_VALIDATE_VERSION}`);

/** A fingerprint of how a thing is built: a cached build made by a different recipe is rebuilt. */
function recipeOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
}

const toolRecipe = (spec: ToolSpec) =>
  recipeOf({ m: spec.module, v: spec.version, p: spec.pkg, how: spec.method, ld: spec.ldflags, cgo: 0 });
const schemasRecipe = () =>
  recipeOf({
    k8s: KUBERNETES_VERSION,
    kv: KUBERNETES_VALIDATE_VERSION,
    po: PROMETHEUS_OPERATOR_VERSION,
    kc: TOOLS.kubeconform.version,
    fix: 2,
  });

interface Stamp {
  recipe: string;
  builtAt: string;
  seconds: number;
  go?: string;
}

function readStamp(dir: string): Stamp | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, STAMP), 'utf8')) as Stamp;
  } catch {
    return undefined;
  }
}

function isToolReady(spec: ToolSpec): boolean {
  return readStamp(toolDir(spec))?.recipe === toolRecipe(spec) && existsSync(toolBin(spec));
}

function areSchemasReady(): boolean {
  return readStamp(schemasDir())?.recipe === schemasRecipe();
}

/** Absolute path of a finished build, or undefined. `schemas` gives the schema dir. */
export function builtPath(name: ToolName | 'schemas'): string | undefined {
  if (name === 'schemas') return areSchemasReady() ? schemasDir() : undefined;
  const spec = TOOLS[name];
  return isToolReady(spec) ? toolBin(spec) : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Running build commands with their output in a log file

class BuildLog {
  readonly file: string;
  readonly what: string;
  private readonly fd: number;
  constructor(file: string, what: string) {
    this.file = file;
    this.what = what;
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '');
    this.fd = openSync(file, 'a'); // O_APPEND, like the commands' fd: nobody overwrites anybody
    this.line(`# ${what}, started ${new Date().toISOString()}`);
  }
  line(text: string): void {
    writeSync(this.fd, `${text}\n`);
  }
  close(): void {
    closeSync(this.fd);
  }
  tail(lines = 20): string {
    const all = readFileSync(this.file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).join('\n');
  }
}

const shellQuote = (arg: string) =>
  /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;

/** Build commands now running (the CLI stops them when it is interrupted). */
const running = new Set<ChildProcess>();

/** Runs a command with its stdout/stderr appended to the build log; throws a descriptive error on failure. */
async function run(
  blog: BuildLog,
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; capture?: boolean },
): Promise<string> {
  const display = [cmd, ...args].map(shellQuote).join(' ');
  blog.line(`\n$ (cd ${opts.cwd} && ${display})`);
  const started = Date.now();
  const logFd = openSync(blog.file, 'a');
  try {
    const result = await new Promise<{ code: number | null; signal: string | null; out: string }>(
      (resolve, reject) => {
        const child = spawn(cmd, args, {
          cwd: opts.cwd,
          env: opts.env ?? process.env,
          stdio: ['ignore', opts.capture ? 'pipe' : logFd, logFd],
        });
        running.add(child);
        let out = '';
        child.stdout?.setEncoding('utf8').on('data', (d: string) => {
          out += d;
        });
        child.on('error', (e) => {
          running.delete(child);
          reject(e);
        });
        child.on('close', (code, signal) => {
          running.delete(child);
          resolve({ code, signal, out });
        });
      },
    ).catch((err: NodeJS.ErrnoException) => {
      const hint = err.code === 'ENOENT' ? ` (is ${cmd} installed and on PATH?)` : '';
      throw new Error(`${blog.what}: cannot run \`${display}\`: ${err.message}${hint}`);
    });
    blog.line(`# exit ${result.code ?? result.signal} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (result.code !== 0) {
      throw new Error(
        `${blog.what} failed: \`${display}\` exited with ${result.code ?? result.signal} ` +
          `(full log: ${blog.file}); last lines:\n${blog.tail(20)}`,
      );
    }
    return result.out;
  } finally {
    closeSync(logFd);
  }
}

/** The environment of every Go step: static binaries, no go.work from the surroundings. */
function goEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, CGO_ENABLED: '0', GOWORK: 'off', ...extra };
}

async function goModDownload(
  blog: BuildLog,
  cwd: string,
  mod: string,
): Promise<{ Dir: string; GoMod: string }> {
  const out = await run(blog, 'go', ['mod', 'download', '-json', mod], { cwd, env: goEnv(), capture: true });
  return JSON.parse(out) as { Dir: string; GoMod: string };
}

/** The `replace old => new vX` lines of a go.mod (module replacements only; local-path ones cannot apply). */
export function moduleReplaces(goMod: string): string[] {
  const out: string[] = [];
  let inBlock = false;
  for (const raw of goMod.split('\n')) {
    const line = raw.replace(/\/\/.*$/, '').trim();
    if (!line) continue;
    if (inBlock) {
      if (line === ')') inBlock = false;
      else out.push(line);
      continue;
    }
    if (/^replace\s*\($/.test(line)) inBlock = true;
    else if (line.startsWith('replace ')) out.push(line.slice('replace '.length).trim());
  }
  return out.filter((r) => {
    const right = r.split('=>')[1]?.trim().split(/\s+/) ?? [];
    return right.length === 2 && !/^(\.|\/)/.test(right[0] ?? '');
  });
}

/** Publishes a finished staging dir at `dir`: the stamp is written last, then one atomic rename. */
function publish(staging: string, dir: string, stamp: Stamp): void {
  writeFileSync(path.join(staging, STAMP), `${JSON.stringify(stamp, null, 2)}\n`);
  chmodSync(staging, 0o755); // mkdtemp makes it private
  if (existsSync(dir)) {
    // A stale or differently built copy (we hold the lock): move it aside first, then drop it.
    const old = `${dir}.old-${process.pid}-${Date.now()}`;
    renameSync(dir, old);
    renameSync(staging, dir);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(staging, dir);
  }
}

/**
 * Removes what killed builds of `id` left behind: staging dirs, half-swapped old dirs, and lock-protocol temp files
 * of dead processes. Called while holding `id`'s lock, so no live build of `id` owns any of them.
 */
function sweep(id: string): void {
  const root = toolsCacheDir();
  for (const entry of readdirSync(root)) {
    if (entry.startsWith(`.tmp-${id}-`) || entry.startsWith(`${id}.old-`)) {
      rmSync(path.join(root, entry), { recursive: true, force: true });
    } else if (entry.startsWith(`${id}.lock.`)) {
      const pid = Number(/^(?:stale\.)?(\d+)\./.exec(entry.slice(`${id}.lock.`.length))?.[1]);
      if (pid && !pidAlive(pid)) rmSync(path.join(root, entry), { force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Go tools

const pending = new Map<string, Promise<unknown>>();
let queue: Promise<unknown> = Promise.resolve();
/**
 * Coalesces concurrent calls for the same thing inside one process (the lock file handles other processes), and
 * runs different builds of one process one after another: the machines have 2 cores and each Go build already
 * uses both.
 */
function once<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const existing = pending.get(key) as Promise<T> | undefined;
  if (existing) return existing;
  const p = queue.then(fn, fn).finally(() => pending.delete(key));
  queue = p.catch(() => {});
  pending.set(key, p);
  return p;
}

/** Returns the absolute path of a working `name` binary, building it on first use. */
export async function ensureTool(name: ToolName, opts: EnsureOptions = {}): Promise<string> {
  const spec = TOOLS[name];
  if (!spec) throw new Error(`unknown tool ${name}; known: ${TOOL_NAMES.join(', ')}`);
  if (!opts.force && isToolReady(spec)) return toolBin(spec);
  return once(`tool:${name}:${opts.force ? 'force' : ''}`, async () => {
    const root = toolsCacheDir();
    mkdirSync(root, { recursive: true });
    const lock = path.join(root, `${name}-${bare(spec.version)}.lock`);
    await withFileLock(lock, () => buildToolLocked(spec, opts), {
      onWait: (pid) => opts.log?.(`waiting for pid ${pid}, which is building ${name} ${spec.version}…`),
    });
    return toolBin(spec);
  });
}

async function buildToolLocked(spec: ToolSpec, opts: EnsureOptions): Promise<void> {
  const log = opts.log ?? (() => {});
  // Another process may have finished it while we waited for the lock.
  if (!opts.force && isToolReady(spec)) return;
  const stale = readStamp(toolDir(spec));
  if (stale && stale.recipe !== toolRecipe(spec))
    log(`${spec.name}: cached build has another recipe, rebuilding`);
  log(
    `building ${spec.name} ${spec.version} (cold build takes about ${spec.coldMinutes} min on 2 cores)… ` +
      `log: ${logFile(`${spec.name}-${bare(spec.version)}`)}`,
  );
  const started = Date.now();
  const root = toolsCacheDir();
  sweep(`${spec.name}-${bare(spec.version)}`);
  const staging = mkdtempSync(path.join(root, `.tmp-${spec.name}-${bare(spec.version)}-`));
  const blog = new BuildLog(
    logFile(`${spec.name}-${bare(spec.version)}`),
    `building ${spec.name} ${spec.version}`,
  );
  try {
    const binDir = path.join(staging, 'bin');
    mkdirSync(binDir);
    const ldflags = spec.ldflags.map((f) => (f.includes(' ') ? `'${f}'` : f)).join(' ');
    if (spec.method === 'install') {
      await run(blog, 'go', ['install', '-trimpath', '-ldflags', ldflags, `${spec.pkg}@${spec.version}`], {
        cwd: staging,
        env: goEnv({ GOBIN: binDir }),
      });
    } else {
      // Throwaway module: keep its go.mod/go.sum next to the binary as a record of what was built.
      const src = path.join(staging, 'src');
      mkdirSync(src);
      const upstream = await goModDownload(blog, src, `${spec.module}@${spec.version}`);
      await run(blog, 'go', ['mod', 'init', `meterline.local/tools/${spec.name}`], {
        cwd: src,
        env: goEnv(),
      });
      const replaces = moduleReplaces(readFileSync(upstream.GoMod, 'utf8'));
      if (replaces.length) {
        const goMod = path.join(src, 'go.mod');
        writeFileSync(
          goMod,
          `${readFileSync(goMod, 'utf8')}\n${replaces.map((r) => `replace ${r}\n`).join('')}`,
        );
        blog.line(`# copied ${replaces.length} replace directive(s) from ${spec.module}@${spec.version}`);
      }
      await run(blog, 'go', ['get', '-tool', `${spec.pkg}@${spec.version}`], { cwd: src, env: goEnv() });
      await run(
        blog,
        'go',
        ['build', '-trimpath', '-ldflags', ldflags, '-o', path.join(binDir, spec.name), spec.pkg],
        { cwd: src, env: goEnv() },
      );
    }
    const bin = path.join(binDir, spec.name);
    const smokeOut = await run(blog, bin, spec.smoke.args, { cwd: staging, capture: true });
    if (!spec.smoke.expect.test(smokeOut)) {
      throw new Error(
        `building ${spec.name} ${spec.version}: \`${spec.name} ${spec.smoke.args.join(' ')}\` printed no ` +
          `${spec.smoke.expect} (log: ${blog.file}):\n${smokeOut.split('\n').slice(0, 20).join('\n')}`,
      );
    }
    const goVersion = (await run(blog, 'go', ['env', 'GOVERSION'], { cwd: staging, capture: true })).trim();
    const seconds = Math.round((Date.now() - started) / 1000);
    publish(staging, toolDir(spec), {
      recipe: toolRecipe(spec),
      builtAt: new Date().toISOString(),
      seconds,
      go: goVersion,
    });
    blog.line(`# ${spec.name} ready in ${seconds} s`);
    log(`${spec.name} ready in ${seconds} s`);
  } finally {
    blog.close();
    rmSync(staging, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Offline Kubernetes + CRD schemas for kubeconform

export interface K8sSchemas {
  /** `-schema-location` templates for kubeconform (absolute; contain `{{ }}` and spaces: pass as one argv each). */
  schemaLocations: string[];
  /** The `-kubernetes-version` the schemas are for (exactly the bundled `X.Y.0`). */
  kubernetesVersion: string;
}

function schemaLocations(dir: string): string[] {
  return [
    path.join(
      dir,
      'k8s',
      '{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}',
      '{{ .ResourceKind }}{{ .KindSuffix }}.json',
    ),
    path.join(dir, 'crds', '{{ .ResourceKind }}{{ .KindSuffix }}.json'),
  ];
}

/** Schemas for Kubernetes 1.35.0 (strict and not) plus the prometheus-operator CRDs, built on first use. */
export async function ensureK8sSchemas(opts: EnsureOptions = {}): Promise<K8sSchemas> {
  const result = { schemaLocations: schemaLocations(schemasDir()), kubernetesVersion: KUBERNETES_VERSION };
  if (!opts.force && areSchemasReady()) return result;
  return once(`schemas:${opts.force ? 'force' : ''}`, async () => {
    const root = toolsCacheDir();
    mkdirSync(root, { recursive: true });
    await withFileLock(path.join(root, `${SCHEMAS_ID}.lock`), () => buildSchemasLocked(opts), {
      onWait: (pid) => opts.log?.(`waiting for pid ${pid}, which is building the Kubernetes schemas…`),
    });
    return result;
  });
}

/**
 * A venv with kubernetes-validate (its bundled schemas, and PyYAML for the CRD converter). Built in place, not
 * renamed: a venv records its own absolute path. Its stamp is written last, and a dir without one is rebuilt.
 */
async function ensureVenv(blog: BuildLog, log: (line: string) => void): Promise<string> {
  const home = venvHome();
  const venv = path.join(home, 'venv');
  const recipe = recipeOf({ kv: KUBERNETES_VALIDATE_VERSION });
  // existsSync follows the bin/python symlink: a venv whose base interpreter is gone is rebuilt.
  if (readStamp(home)?.recipe === recipe && existsSync(path.join(venv, 'bin', 'python'))) return venv;
  const started = Date.now();
  log(`installing kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} (PyPI, 22 MB) into a venv…`);
  rmSync(home, { recursive: true, force: true });
  mkdirSync(home, { recursive: true });
  const python = process.env.PYTHON || 'python3';
  await run(blog, python, ['-m', 'venv', venv], { cwd: home });
  const py = path.join(venv, 'bin', 'python');
  await run(
    blog,
    py,
    [
      '-m',
      'pip',
      'install',
      '--disable-pip-version-check',
      '--no-input',
      `kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}`,
    ],
    { cwd: home },
  );
  await run(blog, py, ['-c', 'import yaml, kubernetes_validate'], { cwd: home });
  const stamp: Stamp = {
    recipe,
    builtAt: new Date().toISOString(),
    seconds: Math.round((Date.now() - started) / 1000),
  };
  writeFileSync(path.join(home, STAMP), `${JSON.stringify(stamp, null, 2)}\n`);
  return venv;
}

/**
 * kubernetes-validate's schemas are draft 2020-12 with `"$id": "https://kubernetes.io/api/..."` and
 * `"$ref": "/api/_definitions.json#/$defs/..."`: kubeconform cannot resolve those offline (and then reports every
 * resource as "could not find schema"). Drop `$id` and make the refs relative to the sibling _definitions.json.
 */
export function fixK8sSchema(node: unknown): unknown {
  if (Array.isArray(node)) {
    for (const v of node) fixK8sSchema(v);
  } else if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    delete o.$id;
    const ref = o.$ref;
    if (typeof ref === 'string' && ref.startsWith('/api/_definitions.json'))
      o.$ref = ref.slice('/api/'.length);
    for (const v of Object.values(o)) fixK8sSchema(v);
  }
  return node;
}

async function buildSchemasLocked(opts: EnsureOptions): Promise<void> {
  if (!opts.force && areSchemasReady()) return;
  const log = opts.log ?? (() => {});
  const started = Date.now();
  log(
    `building Kubernetes ${KUBERNETES_VERSION} + prometheus-operator ${PROMETHEUS_OPERATOR_VERSION} schemas ` +
      `(cold: about 1 min)… log: ${logFile(SCHEMAS_ID)}`,
  );
  const root = toolsCacheDir();
  sweep(SCHEMAS_ID);
  const staging = mkdtempSync(path.join(root, `.tmp-${SCHEMAS_ID}-`));
  const blog = new BuildLog(logFile(SCHEMAS_ID), `building the Kubernetes ${KUBERNETES_VERSION} schemas`);
  try {
    const venv = await ensureVenv(blog, log);

    // 1. Kubernetes schemas, fixed for offline use.
    const lib = path.join(venv, 'lib');
    const pyDir = readdirSync(lib).find((d) => d.startsWith('python'));
    const bundled = path.join(
      lib,
      pyDir ?? 'python3',
      'site-packages',
      'kubernetes_validate',
      'kubernetes-json-schema',
    );
    let count = 0;
    for (const flavour of ['-local', '-local-strict']) {
      const name = `v${KUBERNETES_VERSION}${flavour}`;
      const from = path.join(bundled, name);
      if (!existsSync(from)) {
        throw new Error(
          `kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} has no ${name} (looked in ${bundled})`,
        );
      }
      const to = path.join(staging, 'k8s', name);
      mkdirSync(to, { recursive: true });
      for (const file of readdirSync(from)) {
        if (!file.endsWith('.json')) continue;
        const schema = fixK8sSchema(JSON.parse(readFileSync(path.join(from, file), 'utf8')));
        writeFileSync(path.join(to, file), JSON.stringify(schema));
        count++;
      }
    }
    blog.line(`# fixed ${count} Kubernetes schema files`);

    // 2. CRD schemas, converted by kubeconform's own openapi2jsonschema.py from the CRDs in the Go module zip.
    const po = await goModDownload(
      blog,
      staging,
      `${PROMETHEUS_OPERATOR_MODULE}@${PROMETHEUS_OPERATOR_VERSION}`,
    );
    const kc = await goModDownload(blog, staging, `${KUBECONFORM_MODULE}@${TOOLS.kubeconform.version}`);
    const crdDir = path.join(po.Dir, 'example', 'prometheus-operator-crd-full');
    const crdFiles = readdirSync(crdDir)
      .filter((f) => f.endsWith('.yaml'))
      .sort()
      .map((f) => path.join(crdDir, f));
    const crds = path.join(staging, 'crds');
    mkdirSync(crds);
    await run(
      blog,
      path.join(venv, 'bin', 'python'),
      [path.join(kc.Dir, 'scripts', 'openapi2jsonschema.py'), ...crdFiles],
      {
        cwd: crds,
        // {group} is the first DNS label of the group, which is what kubeconform's KindSuffix uses. Strict: unknown
        // fields are rejected at every level, the root included.
        env: {
          ...process.env,
          FILENAME_FORMAT: '{kind}-{group}-{version}',
          DENY_ROOT_ADDITIONAL_PROPERTIES: '1',
        },
      },
    );
    for (const want of [
      'servicemonitor-monitoring-v1.json',
      'prometheusrule-monitoring-v1.json',
      'podmonitor-monitoring-v1.json',
    ]) {
      if (!existsSync(path.join(crds, want)))
        throw new Error(`CRD conversion produced no ${want} (log: ${blog.file})`);
    }
    const seconds = Math.round((Date.now() - started) / 1000);
    publish(staging, schemasDir(), { recipe: schemasRecipe(), builtAt: new Date().toISOString(), seconds });
    blog.line(`# schemas ready in ${seconds} s`);
    log(
      `Kubernetes schemas ready in ${seconds} s (${readdirSync(path.join(schemasDir(), 'crds')).length} CRD schemas)`,
    );
  } finally {
    blog.close();
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * Runs strict kubeconform against the offline schemas (building tool and schemas on first use). `input`, when
 * given, is piped to stdin (add '-' to args, or pass no files, to read it). Never throws on invalid manifests.
 */
export async function kubeconform(
  args: string[],
  input?: string,
  opts: EnsureOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = await ensureTool('kubeconform', opts);
  const schemas = await ensureK8sSchemas(opts);
  const full = [
    '-strict',
    '-kubernetes-version',
    schemas.kubernetesVersion,
    ...schemas.schemaLocations.flatMap((l) => ['-schema-location', l]),
    ...args,
  ];
  return await new Promise((resolve, reject) => {
    const child = spawn(bin, full, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    if (input !== undefined) child.stdin?.end(input);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: node deploy/tools/tools.ts <command>
  ensure <name...|all> [--force]  build what is missing (sequentially) and print "name<TAB>path" lines
  path <name>                     print the path if built, exit 1 if not
  kubeconform [args...]           strict kubeconform with the offline Kubernetes ${KUBERNETES_VERSION} + CRD schemas
                                  (pass '-' to validate stdin)
names: ${TOOL_NAMES.join(', ')}, schemas (all = every tool and the schemas)
cache: ${toolsCacheDir()}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const err = (line: string) => process.stderr.write(`${line}\n`);
  const isName = (n: string): n is ToolName | 'schemas' =>
    n === 'schemas' || TOOL_NAMES.includes(n as ToolName);
  if (command === 'ensure') {
    const force = rest.includes('--force');
    const names = rest.filter((a) => a !== '--force');
    // `all`: quickest first, so helm + kubeconform + schemas are usable while jaeger still builds.
    const wanted = names.includes('all') ? ['kubeconform', 'helm', 'schemas', 'promtool', 'jaeger'] : names;
    const bad = wanted.filter((n) => !isName(n));
    if (!wanted.length || bad.length) {
      err(bad.length ? `unknown name(s): ${bad.join(', ')}\n${USAGE}` : USAGE);
      return 2;
    }
    const log = (line: string) => err(`[tools] ${line}`);
    // Sequential on purpose: the machines have 2 cores, and Go parallelises each build already.
    for (const name of wanted as (ToolName | 'schemas')[]) {
      if (name === 'schemas') {
        await ensureK8sSchemas({ log, force });
        out(`${name}\t${schemasDir()}`);
      } else {
        out(`${name}\t${await ensureTool(name, { log, force })}`);
      }
    }
    return 0;
  }
  if (command === 'path') {
    const name = rest[0];
    if (rest.length !== 1 || name === undefined || !isName(name)) {
      err(USAGE);
      return 2;
    }
    const p = builtPath(name);
    if (!p) {
      err(`${name} is not built yet: node deploy/tools/tools.ts ensure ${name}`);
      return 1;
    }
    out(p);
    return 0;
  }
  if (command === 'kubeconform') {
    let stdin: string | undefined;
    if (rest.includes('-')) {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      stdin = Buffer.concat(chunks).toString('utf8');
    }
    const r = await kubeconform(rest, stdin, { log: (line) => err(`[tools] ${line}`) });
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    return r.code;
  }
  err(USAGE);
  return command === undefined || command === '-h' || command === '--help' ? 0 : 2;
}

if (import.meta.main) {
  // Interrupted (Ctrl-C, or a test runner's SIGTERM): stop the build commands too, so no orphan keeps writing into
  // a staging dir. The staging dir and the lock are left to the next build, which sweeps them (owner dead).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const child of running) child.kill('SIGTERM');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
