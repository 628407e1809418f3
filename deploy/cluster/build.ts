/**
 * Builds (once, cached) what the single-node cluster runs: etcd v3.6.5 and kube-apiserver, kube-controller-manager,
 * kube-scheduler, kubelet, kube-proxy and kubectl v1.35.4 from the Go module proxy, with the release version
 * ldflags; the pause image from pause.c in the module cache; and installs the runtime packages (containerd, runc,
 * CNI plugins, nftables) with apt when missing.
 *
 * `go install k8s.io/kubernetes/cmd/...@v1.35.4` is refused (k8s.io/kubernetes's go.mod replaces its staging
 * modules with ./staging/...), so a throwaway module maps each staging module to its published v0.35.4 tag and
 * builds the commands from there; etcd likewise goes through a 5-line main calling etcdmain.Main.
 *
 * Binaries go to a temporary directory first and are renamed into bin/ one by one; bin/STAMP is written last and
 * readers only trust bin/ when STAMP matches. The whole build runs under build.lock, so a parallel caller waits
 * and then finds the stamp.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { which } from '../stack/proc.ts';
import {
  BINARIES,
  type Binary,
  binPath,
  type ClusterPaths,
  ETCD_VERSION,
  K8S_VERSION,
  STAGING_VERSION,
} from './paths.ts';
import { ClusterError, cmd, type Log, seconds, timed, withLock, writeAtomic } from './util.ts';

/** Every binary but etcd comes from k8s.io/kubernetes/cmd/<name>. */
const K8S_COMMANDS: readonly Binary[] = BINARIES.filter((b) => b !== 'etcd');

function k8sLdflags(): string {
  const [major, minor] = K8S_VERSION.slice(1).split('.');
  const x = (pkg: string) => [
    `-X ${pkg}.gitVersion=${K8S_VERSION}`,
    `-X ${pkg}.gitMajor=${major}`,
    `-X ${pkg}.gitMinor=${minor}`,
  ];
  return ['-s', '-w', ...x('k8s.io/component-base/version'), ...x('k8s.io/client-go/pkg/version')].join(' ');
}

interface Stamp {
  key: string;
  builtAt: string;
  sizes: Record<string, number>;
}

function stampKey(): string {
  return `k8s=${K8S_VERSION} etcd=${ETCD_VERSION} ldflags=${k8sLdflags()} binaries=${BINARIES.join(',')}`;
}

function readStamp(paths: ClusterPaths): Stamp | undefined {
  try {
    const stamp = JSON.parse(readFileSync(paths.stamp, 'utf8')) as Stamp;
    if (stamp.key !== stampKey()) return undefined;
    for (const name of BINARIES) {
      if (statSync(binPath(paths, name)).size !== stamp.sizes[name]) return undefined;
    }
    return stamp;
  } catch {
    return undefined;
  }
}

function goEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  // Go's default module and build caches (~/go/pkg/mod, ~/.cache/go-build) are shared with other Go builds.
  return { ...process.env, GOFLAGS: '-mod=mod -buildvcs=false', GOTOOLCHAIN: 'local', ...extra };
}

function go(): string {
  const found = which('go');
  if (!found) {
    throw new ClusterError(
      '`go` is not on PATH: Go 1.25 or newer is needed once to build the Kubernetes binaries',
    );
  }
  return found;
}

interface ModuleInfo {
  Dir: string;
  GoMod: string;
}

async function downloadModule(mod: string, cwd: string): Promise<ModuleInfo> {
  const out = await cmd(go(), ['mod', 'download', '-json', mod], { cwd, env: goEnv() });
  return JSON.parse(out.stdout) as ModuleInfo;
}

/** The k8s.io/kubernetes module directory in Go's module cache (for pause.c). */
export async function kubernetesModuleDir(cwd: string): Promise<string> {
  return (await downloadModule(`k8s.io/kubernetes@${K8S_VERSION}`, cwd)).Dir;
}

async function prepareK8sModule(dir: string, log: Log): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const marker = `// meterline throwaway module for kubernetes ${K8S_VERSION}`;
  const goMod = path.join(dir, 'go.mod');
  if (existsSync(goMod) && readFileSync(goMod, 'utf8').includes(marker)) {
    const gosum = path.join(dir, 'go.sum');
    if (existsSync(gosum) && readFileSync(goMod, 'utf8').includes('tool (')) return;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const info = await downloadModule(`k8s.io/kubernetes@${K8S_VERSION}`, dir);
  const upstream = readFileSync(info.GoMod, 'utf8');
  const staging = [...upstream.matchAll(/^\s*(k8s\.io\/[^\s]+)\s+=>\s+\.\/staging\//gm)].map(
    (m) => m[1] as string,
  );
  if (staging.length < 20) {
    throw new ClusterError(
      `found only ${staging.length} staging replaces in ${info.GoMod}; its layout changed?`,
    );
  }
  log(`  mapping ${staging.length} staging modules to ${STAGING_VERSION}`);
  const goVersion = /^go (\S+)/m.exec(upstream)?.[1] ?? '1.25.0';
  writeFileSync(
    goMod,
    `${marker}\nmodule tmp/knode\n\ngo ${goVersion}\n\n` +
      staging.map((m) => `replace ${m} => ${m} ${STAGING_VERSION}\n`).join(''),
  );
  const tools = K8S_COMMANDS.map((c) => `k8s.io/kubernetes/cmd/${c}@${K8S_VERSION}`);
  await timed(log, '  go get -tool (kubernetes commands)', () =>
    cmd(go(), ['get', '-tool', ...tools], { cwd: dir, env: goEnv() }),
  );
}

async function prepareEtcdModule(dir: string, log: Log): Promise<void> {
  const marker = `// meterline throwaway module for etcd ${ETCD_VERSION}`;
  const mainGo = path.join(dir, 'main.go');
  if (
    existsSync(mainGo) &&
    readFileSync(mainGo, 'utf8').includes(marker) &&
    existsSync(path.join(dir, 'go.sum'))
  ) {
    return;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'go.mod'), 'module tmp/etcd\n\ngo 1.24\n');
  writeFileSync(
    mainGo,
    `${marker}\npackage main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n` +
      'func main() { etcdmain.Main(os.Args) }\n',
  );
  await timed(log, '  go get etcd server', async () => {
    await cmd(go(), ['get', `go.etcd.io/etcd/server/v3@${ETCD_VERSION}`], { cwd: dir, env: goEnv() });
    await cmd(go(), ['mod', 'tidy'], { cwd: dir, env: goEnv() });
  });
}

async function checkVersion(file: string, expected: string): Promise<void> {
  const out = await cmd(file, path.basename(file) === 'kubectl' ? ['version', '--client'] : ['--version']);
  const text = `${out.stdout}${out.stderr}`;
  if (!text.includes(expected)) {
    throw new ClusterError(`${file} --version says ${JSON.stringify(text.trim())}, expected ${expected}`);
  }
}

/**
 * Returns when bin/ holds all seven binaries at the pinned versions, building whatever the stamp says is missing.
 * Safe to call from parallel processes.
 */
export async function ensureBinaries(paths: ClusterPaths, log: Log): Promise<void> {
  if (readStamp(paths)) return;
  await withLock(
    paths.buildLock,
    async () => {
      if (readStamp(paths)) {
        log('binaries were built by another caller meanwhile');
        return;
      }
      const t0 = Date.now();
      log(`building etcd ${ETCD_VERSION} and Kubernetes ${K8S_VERSION} (once; cold ≈ 15–25 min on 2 cores)`);
      const tmp = path.join(paths.cache, `bin.tmp-${process.pid}`);
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      try {
        const knode = path.join(paths.src, 'knode');
        const etcdDir = path.join(paths.src, 'etcd');
        await timed(log, 'prepare Go modules', async () => {
          await prepareK8sModule(knode, log);
          await prepareEtcdModule(etcdDir, log);
        });
        await timed(log, `go build ${K8S_COMMANDS.join(', ')}`, () =>
          cmd(
            go(),
            [
              'build',
              '-ldflags',
              k8sLdflags(),
              '-o',
              `${tmp}/`,
              ...K8S_COMMANDS.map((c) => `k8s.io/kubernetes/cmd/${c}`),
            ],
            { cwd: knode, env: goEnv() },
          ),
        );
        await timed(log, 'go build etcd', () =>
          cmd(go(), ['build', '-ldflags', '-s -w', '-o', path.join(tmp, 'etcd'), '.'], {
            cwd: etcdDir,
            env: goEnv(),
          }),
        );
        for (const c of K8S_COMMANDS) await checkVersion(path.join(tmp, c), `${K8S_VERSION}`);
        await checkVersion(path.join(tmp, 'etcd'), ETCD_VERSION.slice(1));
        mkdirSync(paths.bin, { recursive: true });
        rmSync(paths.stamp, { force: true });
        const sizes: Record<string, number> = {};
        for (const name of BINARIES) {
          const from = path.join(tmp, name);
          chmodSync(from, 0o755);
          sizes[name] = statSync(from).size;
          renameSync(from, binPath(paths, name));
        }
        const stamp: Stamp = { key: stampKey(), builtAt: new Date().toISOString(), sizes };
        writeAtomic(paths.stamp, `${JSON.stringify(stamp, null, 2)}\n`);
        log(`binaries installed in ${paths.bin} (${seconds(t0)} in all)`);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    },
    { log, what: 'a Kubernetes build' },
  );
}

/** The apt packages the node needs, with a file that shows each is installed. */
const PACKAGES: ReadonlyArray<{ pkg: string; has: () => boolean }> = [
  { pkg: 'containerd', has: () => Boolean(which('containerd') && which('ctr')) },
  { pkg: 'runc', has: () => Boolean(which('runc')) },
  {
    pkg: 'containernetworking-plugins',
    has: () => existsSync('/usr/lib/cni/bridge') && existsSync('/usr/lib/cni/host-local'),
  },
  { pkg: 'nftables', has: () => Boolean(which('nft')) },
];

/** Installs containerd, runc, the CNI plugins and nftables with apt-get, only those that are missing. */
export async function ensurePackages(log: Log): Promise<void> {
  const missing = PACKAGES.filter((p) => !p.has()).map((p) => p.pkg);
  if (missing.length === 0) return;
  const aptGet = which('apt-get');
  if (!aptGet || process.getuid?.() !== 0) {
    throw new ClusterError(`missing packages ${missing.join(' ')}: install them (needs root and apt-get)`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const args = ['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=600', ...missing];
  const show = (line: string) => {
    if (/^(Setting up|Unpacking|E:)/.test(line)) log(`  apt: ${line}`);
  };
  await timed(log, `apt-get install ${missing.join(' ')}`, async () => {
    const first = await cmd(aptGet, args, { env, check: false, onLine: show });
    if (first.code === 0) return;
    log('  apt-get install failed; running apt-get update and retrying');
    await cmd(aptGet, ['update', '-o', 'DPkg::Lock::Timeout=600'], { env, onLine: show });
    await cmd(aptGet, args, { env, onLine: show });
  });
  const still = PACKAGES.filter((p) => !p.has()).map((p) => p.pkg);
  if (still.length) throw new ClusterError(`apt-get reported success but ${still.join(' ')} still missing`);
}

export interface ImageSpec {
  /** e.g. localhost/pause:local */
  ref: string;
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  env?: string[];
  workingDir?: string;
}

/**
 * Writes a docker-archive tar (the `docker save` / `podman save` layout that `ctr images import` reads) holding
 * one layer made from `rootfs`. No image tool is needed.
 */
export async function writeImageArchive(rootfs: string, spec: ImageSpec, outTar: string): Promise<void> {
  const work = `${outTar}.build-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const layerTar = path.join(work, 'layer.tar');
    await cmd('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
    const diffId = createHash('sha256').update(readFileSync(layerTar)).digest('hex');
    const layerDir = path.join(work, diffId);
    mkdirSync(layerDir);
    renameSync(layerTar, path.join(layerDir, 'layer.tar'));
    const config = {
      architecture: 'amd64',
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: {
        Env: spec.env ?? ['PATH=/bin:/usr/bin:/usr/local/bin'],
        ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
        ...(spec.cmd ? { Cmd: spec.cmd } : {}),
        ...(spec.user ? { User: spec.user } : {}),
        ...(spec.workingDir ? { WorkingDir: spec.workingDir } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
      history: [
        { created: '1970-01-01T00:00:00Z', created_by: 'meterline deploy/cluster writeImageArchive' },
      ],
    };
    const configJson = JSON.stringify(config);
    const configId = createHash('sha256').update(configJson).digest('hex');
    writeFileSync(path.join(work, `${configId}.json`), configJson);
    writeFileSync(
      path.join(work, 'manifest.json'),
      JSON.stringify([{ Config: `${configId}.json`, RepoTags: [spec.ref], Layers: [`${diffId}/layer.tar`] }]),
    );
    const tmpTar = `${outTar}.tmp-${process.pid}`;
    await cmd('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '-C',
      work,
      '-cf',
      tmpTar,
      'manifest.json',
      `${configId}.json`,
      `${diffId}/layer.tar`,
    ]);
    renameSync(tmpTar, outTar);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export const PAUSE_REF = 'localhost/pause:local';

/** Compiles Kubernetes' pause.c (from the module cache) statically and packs it as an image tar, once. */
export async function ensurePauseImage(paths: ClusterPaths, log: Log): Promise<string> {
  if (existsSync(paths.pauseTar)) return paths.pauseTar;
  return withLock(
    paths.buildLock,
    async () => {
      if (existsSync(paths.pauseTar)) return paths.pauseTar;
      await timed(log, 'compile pause.c into the pause image', async () => {
        mkdirSync(paths.images, { recursive: true });
        const modDir = await kubernetesModuleDir(paths.images);
        const source = path.join(modDir, 'build', 'pause', 'linux', 'pause.c');
        const root = path.join(paths.images, `pause-root.${process.pid}`);
        rmSync(root, { recursive: true, force: true });
        mkdirSync(root, { recursive: true });
        try {
          const gcc = which('gcc') ?? which('cc');
          if (!gcc) throw new ClusterError('no C compiler (gcc) to compile pause.c');
          const out = path.join(root, 'pause');
          await cmd(gcc, ['-Os', '-Wall', '-static', '-DVERSION=v3.10-meterline', '-o', out, source]);
          await cmd('strip', [out], { check: false });
          await writeImageArchive(
            root,
            { ref: PAUSE_REF, entrypoint: ['/pause'], user: '65535:65535', env: [] },
            paths.pauseTar,
          );
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      });
      return paths.pauseTar;
    },
    { log, what: 'a Kubernetes build' },
  );
}
