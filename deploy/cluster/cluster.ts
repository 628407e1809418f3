/**
 * A real single-node Kubernetes 1.35.4 on this machine, without Docker or kind: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, kubelet and kube-proxy built from the Go module proxy (build.ts),
 * Debian's containerd + runc + CNI bridge plugin, and a pause image compiled from pause.c.
 *
 *   node deploy/cluster/cluster.ts up           # build once (cached), start, wait for the node Ready
 *   node deploy/cluster/cluster.ts status
 *   node deploy/cluster/cluster.ts kubeconfig   # prints the admin kubeconfig path
 *   node deploy/cluster/cluster.ts import <tar> # an image tar (`podman save`) into containerd's k8s.io namespace
 *   node deploy/cluster/cluster.ts smoke        # up, a pod from a locally built image, down
 *   node deploy/cluster/cluster.ts down         # stop everything, in order, and check nothing is left
 *
 * Everything it writes lives in `${XDG_CACHE_HOME:-~/.cache}/meterline/k8s-1.35.4/` (paths.ts). Traffic stays on
 * this machine: the control plane listens on 127.0.0.1 only, the kubelet on this machine's own primary IPv4
 * address (computed at run time), pods in 10.244.0.0/24 on a bridge without masquerading, services in
 * 10.96.0.0/24 (kube-proxy, nftables mode).
 *
 * With KUBECONFIG already set, `up` and `down` do nothing: the given cluster (kind, EKS, …) is used as it is.
 *
 * The kubelet rewrites three sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops); `up` records
 * them before it starts the kubelet and `down` writes them back.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isAlive, spawnDetached, stopProcess, tailFile, which } from '../stack/proc.ts';
import { ensureBinaries, ensurePackages, ensurePauseImage, PAUSE_REF } from './build.ts';
import { type Binary, binPath, type ClusterPaths, clusterPaths, K8S_VERSION } from './paths.ts';
import {
  ClusterError,
  cmd,
  defaultLog,
  type Log,
  seconds,
  timed,
  waitFor,
  withLock,
  writeAtomic,
} from './util.ts';

export { clusterPaths } from './paths.ts';
export { ClusterError } from './util.ts';

export const NODE_NAME = 'meterline-node';
export const POD_CIDR = '10.244.0.0/24';
export const POD_GATEWAY = '10.244.0.1';
export const SERVICE_CIDR = '10.96.0.0/24';
const CLUSTER_DNS = '10.96.0.10';
const BRIDGE = 'mlcni0';
/**
 * Host settings the node changes: the kubelet sets the first three (KernelTunableModify), the CNI bridge plugin
 * turns on IPv4 forwarding (isGateway). Saved before containerd and the kubelet start, restored by `down`.
 */
const SYSCTLS = [
  'vm.overcommit_memory',
  'kernel.panic',
  'kernel.panic_on_oops',
  'net.ipv4.ip_forward',
] as const;
/**
 * Our own nft table: forwarded traffic from the pod range may only go to the pod range, and only the bridge
 * may forward into it. Pods reach this machine's own addresses (INPUT, not forwarded), each other and the
 * service range (DNATed to pod IPs before this hook); anything else they send (a cloud metadata address, a
 * DNS server, the internet) is dropped here instead of leaving the machine.
 */
const GUARD_TABLE = 'meterline-guard';

/** The processes `up` starts, in start order. */
const PROCS = [
  'containerd',
  'etcd',
  'kube-apiserver',
  'kube-scheduler',
  'kube-controller-manager',
  'kubelet',
  'kube-proxy',
] as const;
type ProcName = (typeof PROCS)[number];

interface ProcRecord {
  pid: number;
  startTime: string;
  log: string;
}

interface Ports {
  etcdClient: number;
  etcdPeer: number;
  apiserver: number;
  kubelet: number;
  kubeletHealthz: number;
  scheduler: number;
  controllerManager: number;
  proxyMetrics: number;
  proxyHealthz: number;
}

interface State {
  nodeIp: string;
  ports: Ports;
  adminToken: string;
  procs: Partial<Record<ProcName, ProcRecord>>;
  /** The values before the kubelet first started (restored by `down`). */
  sysctls?: Record<string, string>;
  /** /run/netns entries that existed before `up` (never touched by `down`). */
  netnsBefore: string[];
  /** `nft list tables` lines before `up`: iptables tables the kubelet creates are removed again if empty. */
  nftTablesBefore?: string[];
  startedAt: string;
}

export interface ClusterInfo {
  /** The kubeconfig to use (KUBECONFIG when it was set, else this cluster's admin kubeconfig). */
  kubeconfig: string;
  /** True when KUBECONFIG was given: this module neither started nor will stop that cluster. */
  external: boolean;
  /** The address pods reach this machine at (its primary IPv4); undefined for an external cluster. */
  nodeIp?: string;
  /** Absolute path of a kubectl v1.35.4 (built here; also used with an external cluster). */
  kubectl: string;
}

export interface ClusterOptions {
  env?: NodeJS.ProcessEnv;
  log?: Log;
}

function ctx(options: ClusterOptions) {
  const env = options.env ?? process.env;
  return { env, log: options.log ?? defaultLog, paths: clusterPaths(env) };
}

/** The given KUBECONFIG, if any: then this module manages no cluster. */
function externalKubeconfig(env: NodeJS.ProcessEnv): string | undefined {
  return env.KUBECONFIG?.trim() || undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Network: this machine's own address, free ports

/**
 * This machine's primary IPv4 address: the one on the interface of the default route (from /proc/net/route),
 * else the first non-loopback IPv4. METERLINE_NODE_IP may name another local address; it must be one of ours.
 */
export function primaryIPv4(env: NodeJS.ProcessEnv = process.env): string {
  const ifaces = os.networkInterfaces();
  const local = Object.entries(ifaces).flatMap(([name, addrs]) =>
    (addrs ?? [])
      .filter((a) => a.family === 'IPv4' && !a.internal)
      .map((a) => ({ name, address: a.address })),
  );
  const wanted = env.METERLINE_NODE_IP?.trim();
  if (wanted) {
    if (!local.some((a) => a.address === wanted)) {
      throw new ClusterError(`METERLINE_NODE_IP=${wanted} is not an address of this machine`);
    }
    return wanted;
  }
  let defaultDev: string | undefined;
  try {
    for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1] === '00000000' && f[7] === '00000000' && f[0]) {
        defaultDev = f[0];
        break;
      }
    }
  } catch {
    // no procfs route table
  }
  const skip = (name: string) => name === BRIDGE || /^(cni|veth|podman|docker|virbr|mlcni)/.test(name);
  const pick =
    local.find((a) => a.name === defaultDev) ??
    local.find((a) => !skip(a.name) && !a.address.startsWith('10.244.'));
  if (!pick) throw new ClusterError('this machine has no non-loopback IPv4 address for the node');
  return pick.address;
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

async function freePort(preferred: number, hosts: string[], taken: Set<number>): Promise<number> {
  const ok = async (p: number) =>
    !taken.has(p) && (await Promise.all(hosts.map((h) => portFree(h, p)))).every(Boolean);
  if (await ok(preferred)) {
    taken.add(preferred);
    return preferred;
  }
  for (let i = 0; i < 50; i++) {
    const p = 20000 + Math.floor(Math.random() * 20000);
    if (await ok(p)) {
      taken.add(p);
      return p;
    }
  }
  throw new ClusterError(`no free port found (wanted ${preferred})`);
}

async function choosePorts(nodeIp: string): Promise<Ports> {
  const taken = new Set<number>();
  const lo = ['127.0.0.1'];
  return {
    etcdClient: await freePort(12379, lo, taken),
    etcdPeer: await freePort(12380, lo, taken),
    apiserver: await freePort(16443, lo, taken),
    kubelet: await freePort(10250, [nodeIp], taken),
    kubeletHealthz: await freePort(10248, lo, taken),
    scheduler: await freePort(10259, lo, taken),
    controllerManager: await freePort(10257, lo, taken),
    proxyMetrics: await freePort(10249, lo, taken),
    proxyHealthz: await freePort(10256, lo, taken),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// State

function readState(paths: ClusterPaths): State | undefined {
  try {
    return JSON.parse(readFileSync(paths.state, 'utf8')) as State;
  } catch {
    return undefined;
  }
}

function writeState(paths: ClusterPaths, state: State): void {
  writeAtomic(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

function procAlive(rec: ProcRecord | undefined): rec is ProcRecord {
  return Boolean(rec && isAlive(rec.pid, rec.startTime));
}

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes API over loopback (self-signed serving cert, static token)

function kapi(
  state: State,
  method: string,
  apiPath: string,
): Promise<{ status: number; body: string; json: () => unknown }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: state.ports.apiserver,
        path: apiPath,
        method,
        rejectUnauthorized: false,
        headers: { Authorization: `Bearer ${state.adminToken}`, Accept: 'application/json' },
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, json: () => JSON.parse(body) }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${apiPath}: timeout`)));
    req.on('error', reject);
    req.end();
  });
}

async function nodeReady(state: State): Promise<boolean> {
  const res = await kapi(state, 'GET', `/api/v1/nodes/${NODE_NAME}`);
  if (res.status !== 200) return false;
  const node = res.json() as { status?: { conditions?: Array<{ type: string; status: string }> } };
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

async function apiserverReady(state: State): Promise<boolean> {
  try {
    return (await kapi(state, 'GET', '/readyz')).status === 200;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Config files

function kubeconfigYaml(server: string, token: string, user: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: meterline',
    `  cluster: {server: "${server}", insecure-skip-tls-verify: true}`,
    'users:',
    `- name: ${user}`,
    `  user: {token: ${token}}`,
    'contexts:',
    '- name: meterline',
    `  context: {cluster: meterline, user: ${user}, namespace: default}`,
    'current-context: meterline',
    '',
  ].join('\n');
}

async function containerdConfig(paths: ClusterPaths): Promise<string> {
  const def = (await cmd('containerd', ['config', 'default'])).stdout;
  const root = path.join(paths.run, 'containerd');
  const edits: Array<[RegExp, string]> = [
    [
      /^disabled_plugins = \[\]$/m,
      'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", ' +
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    ],
    [/^root = .*$/m, `root = "${root}/root"`],
    [/^state = .*$/m, `state = "${root}/state"`],
    [/^(\[grpc\]\n(?:.*\n)*?\s*)address = ".*"$/m, `$1address = "${paths.containerdSock}"`],
    // no CAP_SYS_RESOURCE for root here: CRI's oom_score_adj of -998 would make runc fail (k8s-node.md pitfall 1)
    [/restrict_oom_score_adj = false/, 'restrict_oom_score_adj = true'],
    [/sandbox_image = ".*"/, `sandbox_image = "${PAUSE_REF}"`],
    [/bin_dir = ".*"/, 'bin_dir = "/usr/lib/cni"'],
    [/conf_dir = ".*"/, `conf_dir = "${path.join(paths.run, 'cni', 'net.d')}"`],
  ];
  let out = def;
  for (const [re, to] of edits) {
    if (!re.test(out)) throw new ClusterError(`containerd's default config has no match for ${re}`);
    out = out.replace(re, to);
  }
  return out;
}

function cniConflist(paths: ClusterPaths): string {
  return `${JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'meterline',
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: POD_CIDR, gateway: POD_GATEWAY }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: path.join(paths.run, 'cni', 'ipam'),
          },
        },
      ],
    },
    null,
    2,
  )}\n`;
}

function kubeletConfig(paths: ClusterPaths, state: State): string {
  return [
    'apiVersion: kubelet.config.k8s.io/v1beta1',
    'kind: KubeletConfiguration',
    'failCgroupV1: false',
    'cgroupDriver: cgroupfs',
    'failSwapOn: false',
    `containerRuntimeEndpoint: unix://${paths.containerdSock}`,
    `address: ${state.nodeIp}`,
    `port: ${state.ports.kubelet}`,
    'readOnlyPort: 0',
    'healthzBindAddress: 127.0.0.1',
    `healthzPort: ${state.ports.kubeletHealthz}`,
    'authentication:',
    '  anonymous: {enabled: true}',
    '  webhook: {enabled: false}',
    'authorization:',
    '  mode: AlwaysAllow',
    'clusterDomain: cluster.local',
    `clusterDNS: [${CLUSTER_DNS}]`,
    'resolvConf: /etc/resolv.conf',
    'cgroupsPerQOS: true',
    'enforceNodeAllocatable: [pods]',
    'evictionHard: {memory.available: "200Mi", nodefs.available: "5%", imagefs.available: "5%"}',
    'imageGCHighThresholdPercent: 95',
    'imageGCLowThresholdPercent: 90',
    'serializeImagePulls: false',
    `staticPodPath: ${path.join(paths.run, 'kubelet', 'manifests')}`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

function procArgs(name: ProcName, paths: ClusterPaths, state: State): [string, string[]] {
  const r = paths.run;
  const p = state.ports;
  const kas = path.join(r, 'kas');
  const admin = paths.adminKubeconfig;
  const bin = (b: Binary) => binPath(paths, b);
  switch (name) {
    case 'containerd':
      return ['containerd', ['--config', path.join(r, 'containerd', 'config.toml')]];
    case 'etcd':
      return [
        bin('etcd'),
        [
          `--data-dir=${path.join(r, 'etcd-data')}`,
          `--listen-client-urls=http://127.0.0.1:${p.etcdClient}`,
          `--advertise-client-urls=http://127.0.0.1:${p.etcdClient}`,
          `--listen-peer-urls=http://127.0.0.1:${p.etcdPeer}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${p.etcdPeer}`,
          `--initial-cluster=default=http://127.0.0.1:${p.etcdPeer}`,
        ],
      ];
    case 'kube-apiserver':
      return [
        bin('kube-apiserver'),
        [
          `--etcd-servers=http://127.0.0.1:${p.etcdClient}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${p.apiserver}`,
          `--cert-dir=${path.join(kas, 'certs')}`,
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          `--service-account-key-file=${path.join(kas, 'sa.pub')}`,
          `--service-account-signing-key-file=${path.join(kas, 'sa.key')}`,
          `--token-auth-file=${path.join(kas, 'tokens.csv')}`,
          '--authorization-mode=Node,RBAC',
          `--service-cluster-ip-range=${SERVICE_CIDR}`,
          '--allow-privileged=true',
          '--kubelet-preferred-address-types=InternalIP,Hostname',
        ],
      ];
    case 'kube-scheduler':
      return [
        bin('kube-scheduler'),
        [
          `--kubeconfig=${admin}`,
          `--authentication-kubeconfig=${admin}`,
          `--authorization-kubeconfig=${admin}`,
          '--bind-address=127.0.0.1',
          `--secure-port=${p.scheduler}`,
          '--leader-elect=false',
        ],
      ];
    case 'kube-controller-manager':
      return [
        bin('kube-controller-manager'),
        [
          `--kubeconfig=${admin}`,
          `--authentication-kubeconfig=${admin}`,
          `--authorization-kubeconfig=${admin}`,
          '--bind-address=127.0.0.1',
          `--secure-port=${p.controllerManager}`,
          '--leader-elect=false',
          `--service-account-private-key-file=${path.join(kas, 'sa.key')}`,
          // publishes the kube-root-ca.crt ConfigMap every pod's service-account volume needs
          `--root-ca-file=${path.join(kas, 'certs', 'apiserver.crt')}`,
          '--use-service-account-credentials=false',
          '--controllers=*,-cloud-node-lifecycle',
        ],
      ];
    case 'kubelet':
      return [
        bin('kubelet'),
        [
          `--config=${path.join(r, 'kubelet', 'config.yaml')}`,
          `--kubeconfig=${paths.kubeletKubeconfig}`,
          `--root-dir=${path.join(r, 'kubelet-root')}`,
          `--cert-dir=${path.join(r, 'kubelet', 'pki')}`,
          `--hostname-override=${NODE_NAME}`,
          `--node-ip=${state.nodeIp}`,
          '-v=2',
        ],
      ];
    case 'kube-proxy':
      return [
        bin('kube-proxy'),
        [
          `--kubeconfig=${admin}`,
          '--proxy-mode=nftables',
          `--hostname-override=${NODE_NAME}`,
          `--cluster-cidr=${POD_CIDR}`,
          '--conntrack-max-per-core=0',
          '--conntrack-tcp-timeout-established=0',
          '--conntrack-tcp-timeout-close-wait=0',
          `--metrics-bind-address=127.0.0.1:${p.proxyMetrics}`,
          `--healthz-bind-address=127.0.0.1:${p.proxyHealthz}`,
          '--nodeport-addresses=primary',
        ],
      ];
  }
}

async function startProc(name: ProcName, paths: ClusterPaths, state: State): Promise<ProcRecord> {
  const [command, args] = procArgs(name, paths, state);
  const log = path.join(paths.logs, `${name}.log`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${paths.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  };
  delete env.KUBECONFIG;
  const proc = await spawnDetached(command, args, { cwd: paths.run, env, logFile: log });
  const rec: ProcRecord = { pid: proc.pid, startTime: proc.startTime, log };
  state.procs[name] = rec;
  writeState(paths, state); // at once, so `down` can stop it whatever happens next
  return rec;
}

function detailOf(rec: ProcRecord | undefined, name: string): () => string {
  return () =>
    rec
      ? `${name} (pid ${rec.pid}, ${isAlive(rec.pid, rec.startTime) ? 'alive' : 'DEAD'}) log tail:\n${tailFile(rec.log, 25)}`
      : '';
}

async function waitProc<T>(
  name: ProcName,
  state: State,
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 90_000,
): Promise<T> {
  const rec = state.procs[name];
  return waitFor(
    what,
    async () => {
      if (rec && !isAlive(rec.pid, rec.startTime)) {
        throw new ClusterError(`${name} exited:\n${tailFile(rec.log, 30)}`);
      }
      return probe();
    },
    { timeoutMs, detail: detailOf(rec, name) },
  );
}

function readSysctl(name: string): string {
  return readFileSync(`/proc/sys/${name.replaceAll('.', '/')}`, 'utf8').trim();
}

function writeSysctl(name: string, value: string): void {
  writeFileSync(`/proc/sys/${name.replaceAll('.', '/')}`, `${value}\n`);
}

function ctr(paths: ClusterPaths, args: string[], check = true) {
  return cmd('ctr', ['-a', paths.containerdSock, '-n', 'k8s.io', ...args], { check });
}

// ---------------------------------------------------------------------------------------------------------------
// Mounts, leftovers

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points at or under `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => Boolean(p))
    .map(unescapeMount)
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

function listNetns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

async function nftTableExists(family: string, table: string): Promise<boolean> {
  const res = await cmd('nft', ['list', 'table', family, table], { check: false });
  return res.code === 0;
}

function kubepodsCgroups(): string[] {
  try {
    return readdirSync('/sys/fs/cgroup')
      .flatMap((c) => [
        path.join('/sys/fs/cgroup', c, 'kubepods'),
        path.join('/sys/fs/cgroup', c, 'kubepods.slice'),
      ])
      .filter((d) => existsSync(d));
  } catch {
    return [];
  }
}

function rmdirTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) rmdirTree(path.join(dir, e.name));
  }
  rmdirSync(dir);
}

/** Processes that belong to this cluster: our binaries, and containerd shims talking to our socket. */
function strayProcesses(paths: ClusterPaths): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      let exe = '';
      try {
        exe = readlinkSync(`/proc/${pid}/exe`);
      } catch {
        // kernel thread or gone
      }
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (/\) [ZX] /.test(stat)) continue;
      if (
        exe.startsWith(`${paths.bin}/`) ||
        cmdline.includes(paths.containerdSock) ||
        cmdline.includes(path.join(paths.run, 'containerd', 'config.toml'))
      ) {
        out.push(`${pid} ${cmdline.slice(0, 160)}`);
      }
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function nftTables(): Promise<string[]> {
  const res = await cmd('nft', ['list', 'tables'], { check: false });
  return res.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Splits an iptables-save rule line into arguments (double-quoted strings stay one argument). */
function splitRule(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) =>
    m[1] !== undefined ? m[1] : (m[2] as string),
  );
}

const IPT_TABLES = ['filter', 'nat', 'mangle'] as const;
const IPT_TOOLS = [
  { tool: 'iptables', family: 'ip' },
  { tool: 'ip6tables', family: 'ip6' },
] as const;

/** KUBE-* chains (the kubelet's canaries, KUBE-FIREWALL, KUBE-IPTABLES-HINT) left in iptables, as text. */
async function kubeIptablesLeft(): Promise<string[]> {
  const out: string[] = [];
  for (const { tool } of IPT_TOOLS) {
    if (!which(`${tool}-save`)) continue;
    const saved = await cmd(`${tool}-save`, [], { check: false });
    for (const l of saved.stdout.split('\n')) if (/^:KUBE-|-j KUBE-/.test(l)) out.push(`${tool}: ${l}`);
  }
  return out;
}

/**
 * The kubelet (even with kube-proxy in nftables mode) makes iptables chains: KUBE-KUBELET-CANARY in filter,
 * nat and mangle, KUBE-IPTABLES-HINT in mangle, and KUBE-FIREWALL with jumps from INPUT and OUTPUT. Removes
 * those jumps and chains, then the tables that did not exist before `up` and are empty now.
 */
async function removeKubeletIptables(state: State, log: Log): Promise<void> {
  let removed = 0;
  for (const { tool, family } of IPT_TOOLS) {
    if (!which(tool) || !which(`${tool}-save`)) continue;
    for (const table of IPT_TABLES) {
      const saved = await cmd(`${tool}-save`, ['-t', table], { check: false });
      if (saved.code !== 0) continue;
      const lines = saved.stdout.split('\n');
      const chains = lines
        .filter((l) => l.startsWith(':KUBE-'))
        .map((l) => l.slice(1).split(' ')[0] as string);
      for (const l of lines) {
        if (l.startsWith('-A ') && !l.startsWith('-A KUBE-') && / -j KUBE-/.test(l)) {
          await cmd(tool, ['-t', table, '-D', ...splitRule(l.slice(3))], { check: false });
          removed++;
        }
      }
      for (const c of chains) await cmd(tool, ['-t', table, '-F', c], { check: false });
      for (const c of chains) {
        await cmd(tool, ['-t', table, '-X', c], { check: false });
        removed++;
      }
      const name = `table ${family} ${table}`;
      if (state.nftTablesBefore && !state.nftTablesBefore.includes(name)) {
        const after = await cmd(`${tool}-save`, ['-t', table], { check: false });
        const custom = after.stdout
          .split('\n')
          .filter((l) => l.startsWith('-A ') || /^:(?!PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l));
        if (custom.length === 0 && (await nftTableExists(family, table))) {
          await cmd('nft', ['delete', 'table', family, table], { check: false });
        }
      }
    }
  }
  if (removed) log(`  removed the kubelet's iptables chains and jumps (${removed})`);
}

async function installGuard(): Promise<void> {
  if (await nftTableExists('inet', GUARD_TABLE)) await cmd('nft', ['delete', 'table', 'inet', GUARD_TABLE]);
  await cmd('nft', ['-f', '-'], {
    input:
      `table inet ${GUARD_TABLE} {\n` +
      '  chain forward {\n' +
      '    type filter hook forward priority -10; policy accept;\n' +
      `    ip saddr ${POD_CIDR} ip daddr != ${POD_CIDR} drop\n` +
      `    ip daddr ${POD_CIDR} iifname != "${BRIDGE}" drop\n` +
      `    meta nfproto ipv6 iifname "${BRIDGE}" drop\n` +
      '  }\n' +
      '}\n',
  });
}

// ---------------------------------------------------------------------------------------------------------------
// up

async function kubectlOk(paths: ClusterPaths, args: string[]): Promise<boolean> {
  const res = await cmd(binPath(paths, 'kubectl'), ['--kubeconfig', paths.adminKubeconfig, ...args], {
    check: false,
  });
  return res.code === 0;
}

/** Imports the pause image, then any extra images (tars from `podman save` or writeImageArchive). */
async function importTar(paths: ClusterPaths, tar: string): Promise<string[]> {
  const res = await ctr(paths, ['images', 'import', tar]);
  return [...`${res.stdout}${res.stderr}`.matchAll(/unpacking (\S+)/g)].map((m) => m[1] as string);
}

async function startFresh(paths: ClusterPaths, log: Log): Promise<State> {
  const leftover = mountsUnder(paths.run);
  if (leftover.length) {
    throw new ClusterError(
      `mounts are still under ${paths.run} (run \`down\` first):\n${leftover.join('\n')}`,
    );
  }
  // Everything goes but containerd's image store: removing it (and importing the images again) costs a
  // minute for an image with node_modules; containers and sandboxes in it were removed by `down`.
  mkdirSync(paths.run, { recursive: true });
  for (const entry of readdirSync(paths.run)) {
    if (entry !== 'containerd') rmSync(path.join(paths.run, entry), { recursive: true, force: true });
  }
  for (const entry of existsSync(path.join(paths.run, 'containerd'))
    ? readdirSync(path.join(paths.run, 'containerd'))
    : []) {
    if (entry !== 'root') rmSync(path.join(paths.run, 'containerd', entry), { recursive: true, force: true });
  }
  for (const d of [
    paths.logs,
    'containerd',
    'cni/net.d',
    'cni/ipam',
    'kas/certs',
    'kubelet/manifests',
    'kubelet/pki',
    'kubelet-root',
    'etcd-data',
  ]) {
    mkdirSync(path.isAbsolute(d) ? d : path.join(paths.run, d), { recursive: true });
  }
  const nodeIp = primaryIPv4();
  const state: State = {
    nodeIp,
    ports: await choosePorts(nodeIp),
    adminToken: randomBytes(24).toString('hex'),
    procs: {},
    netnsBefore: listNetns(),
    nftTablesBefore: await nftTables(),
    startedAt: new Date().toISOString(),
  };
  const kubeletToken = randomBytes(24).toString('hex');
  const kas = path.join(paths.run, 'kas');
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(path.join(kas, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), {
    mode: 0o600,
  });
  writeFileSync(path.join(kas, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(
    path.join(kas, 'tokens.csv'),
    `${state.adminToken},admin,admin,"system:masters"\n` +
      `${kubeletToken},system:node:${NODE_NAME},kubelet-${NODE_NAME},"system:nodes"\n`,
    { mode: 0o600 },
  );
  const server = `https://127.0.0.1:${state.ports.apiserver}`;
  writeFileSync(paths.adminKubeconfig, kubeconfigYaml(server, state.adminToken, 'admin'), { mode: 0o600 });
  writeFileSync(paths.kubeletKubeconfig, kubeconfigYaml(server, kubeletToken, `system:node:${NODE_NAME}`), {
    mode: 0o600,
  });
  writeFileSync(path.join(paths.run, 'containerd', 'config.toml'), await containerdConfig(paths));
  writeFileSync(path.join(paths.run, 'cni', 'net.d', '10-meterline.conflist'), cniConflist(paths));
  writeFileSync(path.join(paths.run, 'kubelet', 'config.yaml'), kubeletConfig(paths, state));
  writeState(paths, state);
  log(
    `node IP ${nodeIp}; apiserver 127.0.0.1:${state.ports.apiserver}, etcd 127.0.0.1:${state.ports.etcdClient}`,
  );

  // Keep the very first values seen, even across a failed up (a half-up cluster is torn down first).
  state.sysctls = Object.fromEntries(SYSCTLS.map((s) => [s, readSysctl(s)]));
  writeState(paths, state);
  log(`saved sysctls ${SYSCTLS.map((s) => `${s}=${state.sysctls?.[s]}`).join(' ')}`);
  await installGuard();
  await timed(log, 'containerd', async () => {
    await startProc('containerd', paths, state);
    await waitProc('containerd', state, 'containerd to answer', async () => {
      const res = await cmd('ctr', ['-a', paths.containerdSock, 'version'], { check: false });
      return res.code === 0;
    });
    await importTar(paths, paths.pauseTar);
  });
  await timed(log, 'etcd', async () => {
    await startProc('etcd', paths, state);
    await waitProc('etcd', state, 'etcd /health', async () => {
      const res = await fetch(`http://127.0.0.1:${state.ports.etcdClient}/health`);
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    });
  });
  await timed(log, 'kube-apiserver (readyz)', async () => {
    await startProc('kube-apiserver', paths, state);
    await waitProc('kube-apiserver', state, 'kube-apiserver /readyz', () => apiserverReady(state), 120_000);
  });
  await timed(log, 'kube-scheduler, kube-controller-manager', async () => {
    await startProc('kube-scheduler', paths, state);
    await startProc('kube-controller-manager', paths, state);
    await waitProc('kube-scheduler', state, 'kube-scheduler', async () => true);
  });
  await timed(log, 'kubelet → node Ready', async () => {
    await startProc('kubelet', paths, state);
    await waitProc('kubelet', state, `node ${NODE_NAME} Ready`, () => nodeReady(state), 120_000);
  });
  await timed(log, 'kube-proxy (nftables)', async () => {
    await startProc('kube-proxy', paths, state);
    await waitProc('kube-proxy', state, 'kube-proxy healthz', async () => {
      const res = await fetch(`http://127.0.0.1:${state.ports.proxyHealthz}/healthz`);
      return res.status === 200;
    });
  });
  await timed(log, 'service account default', () =>
    waitProc('kube-controller-manager', state, '`kubectl get sa default`', () =>
      kubectlOk(paths, ['get', 'sa', 'default']),
    ),
  );
  return state;
}

function info(paths: ClusterPaths, state: State): ClusterInfo {
  return {
    kubeconfig: paths.adminKubeconfig,
    external: false,
    nodeIp: state.nodeIp,
    kubectl: binPath(paths, 'kubectl'),
  };
}

/** Builds what is missing (cached) and installs the runtime packages; doesn't start anything. */
export async function prepare(options: ClusterOptions = {}): Promise<void> {
  const { paths, log } = ctx(options);
  await Promise.all([ensurePackages(log), ensureBinaries(paths, log)]);
  await ensurePauseImage(paths, log);
}

/**
 * Starts the cluster (or reuses a healthy running one) and waits for the node Ready and the default service
 * account. With KUBECONFIG set, only builds kubectl and returns the given kubeconfig.
 */
export async function up(options: ClusterOptions = {}): Promise<ClusterInfo> {
  const { env, paths, log } = ctx(options);
  const given = externalKubeconfig(env);
  if (given) {
    log(`KUBECONFIG is set (${given}): using that cluster, starting nothing`);
    await ensureBinaries(paths, log);
    return { kubeconfig: given, external: true, kubectl: binPath(paths, 'kubectl') };
  }
  const t0 = Date.now();
  return withLock(
    paths.clusterLock,
    async () => {
      await prepare(options);
      const existing = readState(paths);
      if (existing) {
        const alive = PROCS.filter((p) => procAlive(existing.procs[p]));
        if (
          alive.length === PROCS.length &&
          (await apiserverReady(existing)) &&
          (await nodeReady(existing))
        ) {
          log(`reusing the running cluster (node ${NODE_NAME} Ready, ${existing.nodeIp})`);
          return info(paths, existing);
        }
        if (alive.length > 0 || mountsUnder(paths.run).length > 0) {
          log(`a previous cluster is half up (${alive.join(', ') || 'mounts only'}): tearing it down first`);
          await teardown(paths, existing, log);
        }
      }
      const state = await startFresh(paths, log);
      log(`node ${NODE_NAME} Ready (${K8S_VERSION}, ${state.nodeIp}); cluster up in ${seconds(t0)}`);
      return info(paths, state);
    },
    { log, what: 'cluster up/down' },
  );
}

/** Imports an image tar (docker-archive or oci-archive, e.g. from `podman save`) into containerd's k8s.io namespace. */
export async function importImage(tarPath: string, options: ClusterOptions = {}): Promise<string[]> {
  const { env, paths, log } = ctx(options);
  if (externalKubeconfig(env)) {
    throw new ClusterError(
      `KUBECONFIG is set: this cluster is not ours, so ${tarPath} can't be imported here. ` +
        'Load it yourself (e.g. `kind load image-archive`), or push it to a registry the cluster pulls from.',
    );
  }
  const state = readState(paths);
  if (!procAlive(state?.procs.containerd)) throw new ClusterError('the cluster is not up (no containerd)');
  const t0 = Date.now();
  const refs = await importTar(paths, path.resolve(tarPath));
  log(`imported ${refs.join(', ') || tarPath} in ${seconds(t0)}`);
  return refs;
}

/** Kubeconfig path of the cluster in use (KUBECONFIG when set). */
export function kubeconfigPath(options: ClusterOptions = {}): string {
  const { env, paths } = ctx(options);
  return externalKubeconfig(env) ?? paths.adminKubeconfig;
}

export interface ProcStatus {
  name: string;
  pid?: number;
  alive: boolean;
}

export async function status(options: ClusterOptions = {}): Promise<{
  external: boolean;
  kubeconfig: string;
  nodeIp?: string;
  procs: ProcStatus[];
  nodeReady?: boolean;
}> {
  const { env, paths } = ctx(options);
  const given = externalKubeconfig(env);
  if (given) return { external: true, kubeconfig: given, procs: [] };
  const state = readState(paths);
  const procs = PROCS.map((name) => {
    const rec = state?.procs[name];
    return { name, ...(rec ? { pid: rec.pid } : {}), alive: procAlive(rec) };
  });
  let ready: boolean | undefined;
  if (state && procAlive(state.procs['kube-apiserver'])) ready = await nodeReady(state).catch(() => false);
  return {
    external: false,
    kubeconfig: paths.adminKubeconfig,
    ...(state ? { nodeIp: state.nodeIp } : {}),
    procs,
    ...(ready === undefined ? {} : { nodeReady: ready }),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// down

async function stopRecorded(state: State, name: ProcName, log: Log, graceMs = 30_000) {
  const rec = state.procs[name];
  if (!rec) return;
  const t0 = Date.now();
  const result = await stopProcess(rec.pid, rec.startTime, graceMs);
  if (result !== 'not-running') log(`  ${name} (pid ${rec.pid}) ${result} in ${seconds(t0)}`);
}

async function deleteAllPods(paths: ClusterPaths, state: State, log: Log): Promise<void> {
  if (!procAlive(state.procs['kube-apiserver']) || !(await apiserverReady(state))) {
    log('  apiserver not up: skipping pod deletion (containerd cleanup follows)');
    return;
  }
  if (!procAlive(state.procs.kubelet)) {
    log('  kubelet not running: skipping graceful pod deletion');
    return;
  }
  const kubectl = binPath(paths, 'kubectl');
  const base = ['--kubeconfig', paths.adminKubeconfig];
  const res = await cmd(
    kubectl,
    [
      ...base,
      'delete',
      'pods',
      '--all',
      '--all-namespaces',
      '--grace-period=2',
      '--wait=true',
      '--timeout=90s',
    ],
    { check: false },
  );
  if (res.code !== 0) {
    log(`  graceful pod deletion did not finish (${res.stderr.trim().split('\n').pop()}); forcing`);
    await cmd(
      kubectl,
      [...base, 'delete', 'pods', '--all', '--all-namespaces', '--force', '--grace-period=0'],
      {
        check: false,
      },
    );
  }
  // The kubelet stops each sandbox (CNI teardown, netns removal) after its pod is gone; give it a moment.
  await waitFor(
    'the kubelet to stop every pod sandbox',
    async () => {
      const out = await ctr(paths, ['tasks', 'ls'], false);
      return !/RUNNING/.test(out.stdout);
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  ).catch((err: Error) => log(`  ${err.message.split('\n')[0]}; removing them through containerd`));
}

async function removeContainers(paths: ClusterPaths, log: Log): Promise<void> {
  const list = await ctr(paths, ['containers', 'ls', '-q'], false);
  const ids = list.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const id of ids) {
    await ctr(paths, ['tasks', 'kill', '-s', 'SIGKILL', id], false);
    await ctr(paths, ['tasks', 'rm', '-f', id], false);
    await ctr(paths, ['containers', 'rm', id], false);
  }
  if (ids.length) log(`  removed ${ids.length} containers/sandboxes through containerd`);
}

/**
 * Stops everything in the verified order and removes what the cluster left on the host; then checks that no
 * process of ours and no mount under the run dir remain, failing loudly otherwise.
 */
async function teardown(paths: ClusterPaths, state: State, log: Log): Promise<void> {
  await timed(log, 'pods', async () => {
    // no controller may recreate what we delete
    await stopRecorded(state, 'kube-proxy', log);
    await stopRecorded(state, 'kube-controller-manager', log);
    await stopRecorded(state, 'kube-scheduler', log);
    await deleteAllPods(paths, state, log);
  });
  await timed(log, 'kubelet', () => stopRecorded(state, 'kubelet', log));
  await timed(log, 'sandboxes and containerd', async () => {
    const shimsLeft = strayProcesses(paths).filter((p) => p.includes('containerd-shim'));
    if (!procAlive(state.procs.containerd) && (shimsLeft.length > 0 || mountsUnder(paths.run).length > 0)) {
      log('  containerd is not running but shims or mounts remain: starting it to clean up');
      await startProc('containerd', paths, state);
      await waitFor('containerd to answer', async () => {
        return (await cmd('ctr', ['-a', paths.containerdSock, 'version'], { check: false })).code === 0;
      });
    }
    if (procAlive(state.procs.containerd)) await removeContainers(paths, log);
    await stopRecorded(state, 'containerd', log);
  });
  await timed(log, 'control plane', async () => {
    await stopRecorded(state, 'kube-apiserver', log);
    await stopRecorded(state, 'etcd', log);
  });
  await timed(log, 'host leftovers', async () => {
    for (const m of mountsUnder(paths.run)) {
      const res = await cmd('umount', [m], { check: false });
      if (res.code !== 0) await cmd('umount', ['-l', m], { check: false });
    }
    for (const ns of listNetns()) {
      if (!ns.startsWith('cni-') || state.netnsBefore.includes(ns)) continue;
      const p = path.join('/run/netns', ns);
      await cmd('umount', [p], { check: false });
      rmSync(p, { force: true });
      log(`  removed network namespace ${ns}`);
    }
    if (linkExists(BRIDGE)) await cmd('ip', ['link', 'del', BRIDGE]);
    for (const family of ['ip', 'ip6']) {
      if (await nftTableExists(family, 'kube-proxy'))
        await cmd('nft', ['delete', 'table', family, 'kube-proxy']);
    }
    if (await nftTableExists('inet', GUARD_TABLE)) await cmd('nft', ['delete', 'table', 'inet', GUARD_TABLE]);
    await removeKubeletIptables(state, log);
    if (state.sysctls) {
      for (const [k, v] of Object.entries(state.sysctls)) {
        if (readSysctl(k) !== v) {
          writeSysctl(k, v);
          log(`  restored ${k}=${v}`);
        }
      }
    }
    for (const d of kubepodsCgroups()) {
      try {
        rmdirTree(d);
      } catch (err) {
        log(`  cannot remove ${d}: ${(err as Error).message}`);
      }
    }
    for (const d of [
      '/run/containerd/s',
      '/run/containerd/runc/k8s.io',
      '/run/containerd/runc',
      '/run/containerd',
    ]) {
      try {
        rmdirSync(d); // only when empty: anything else there is not ours
      } catch {
        // absent or not empty
      }
    }
  });
  const problems: string[] = [];
  for (const name of PROCS) {
    const rec = state.procs[name];
    if (procAlive(rec)) problems.push(`${name} pid ${rec.pid} still runs`);
  }
  for (const p of strayProcesses(paths)) problems.push(`process still runs: ${p}`);
  for (const m of mountsUnder(paths.run)) problems.push(`still mounted: ${m}`);
  if (linkExists(BRIDGE)) problems.push(`link ${BRIDGE} still exists`);
  for (const family of ['ip', 'ip6']) {
    if (await nftTableExists(family, 'kube-proxy'))
      problems.push(`nft table ${family} kube-proxy still exists`);
  }
  if (await nftTableExists('inet', GUARD_TABLE)) problems.push(`nft table inet ${GUARD_TABLE} still exists`);
  for (const l of await kubeIptablesLeft()) problems.push(`iptables rule or chain left: ${l}`);
  if (state.nftTablesBefore) {
    const before = state.nftTablesBefore;
    const now = await nftTables();
    for (const t of now.filter((t) => !before.includes(t))) problems.push(`nft ${t} did not exist before up`);
  }
  for (const d of kubepodsCgroups()) problems.push(`cgroup ${d} still exists`);
  if (state.sysctls) {
    for (const [k, v] of Object.entries(state.sysctls)) {
      if (readSysctl(k) !== v) problems.push(`sysctl ${k} is ${readSysctl(k)}, was ${v}`);
    }
  }
  if (problems.length) {
    throw new ClusterError(`teardown left things behind:\n  ${problems.join('\n  ')}`);
  }
  state.procs = {};
  delete state.sysctls;
  writeState(paths, state);
}

/** Tears the cluster down (see teardown). With KUBECONFIG set, does nothing. */
export async function down(options: ClusterOptions = {}): Promise<void> {
  const { env, paths, log } = ctx(options);
  if (externalKubeconfig(env)) {
    log('KUBECONFIG is set: the given cluster is not ours; leaving it alone');
    return;
  }
  const t0 = Date.now();
  await withLock(
    paths.clusterLock,
    async () => {
      const state = readState(paths);
      if (!state) {
        log('no cluster recorded: nothing to stop');
        return;
      }
      await teardown(paths, state, log);
      log(`clean teardown in ${seconds(t0)}: no process, mount, link, nft table or kubepods cgroup left`);
    },
    { log, what: 'cluster up/down' },
  );
}

// ---------------------------------------------------------------------------------------------------------------
// CLI

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up': {
      const i = await up();
      process.stdout.write(`${i.kubeconfig}\n`);
      return 0;
    }
    case 'down':
      await down();
      return 0;
    case 'build':
      await prepare();
      return 0;
    case 'status': {
      const s = await status();
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      return 0;
    }
    case 'kubeconfig':
      process.stdout.write(`${kubeconfigPath()}\n`);
      return 0;
    case 'import': {
      if (rest.length === 0) throw new ClusterError('usage: cluster.ts import <image.tar>…');
      for (const tar of rest) await importImage(tar);
      return 0;
    }
    case 'smoke': {
      const { smoke } = await import('./smoke.ts');
      await smoke();
      return 0;
    }
    default:
      process.stderr.write(
        'usage: node deploy/cluster/cluster.ts up|down|status|kubeconfig|build|import <tar>|smoke\n',
      );
      return 2;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${err instanceof ClusterError ? err.message : (err as Error).stack}\n`);
      process.exit(1);
    },
  );
}
