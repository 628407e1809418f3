/**
 * A 3-master Redis Cluster (no replicas) for the cluster test suite, from the same distribution `redis-server` as
 * the standalone service. Optional: `ensureStack()` and a bare `stack:up` skip it;
 * `ensureServices(['redis-cluster'])` or `npm run stack:up -- --only redis-cluster` start it.
 *
 * Each node listens on 127.0.0.1:<port> with its cluster bus on port+10000, and keeps nodes.conf and its AOF
 * (everysec, no RDB) in `.stack/redis-cluster/<port>`; cluster-node-timeout is 5 s. The slots are assigned with
 * `redis-cli --cluster create`. A restart on the same ports with every nodes.conf intact rejoins that cluster
 * (with its data); otherwise the node dirs are wiped and a new cluster is created.
 *
 * The record's pid is the first node's; every node's pid and start time are in `meta.nodes`, and `stop` stops
 * them all by pid.
 */
import { appendFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { isPortFree, LOCALHOST } from './ports.ts';
import { type DetachedProcess, isAlive, run, spawnDetached, stopProcess, which } from './proc.ts';
import { ensureRedisServer, probeClient, REDIS_DURABILITY_ARGS } from './redis.ts';
import { type ServiceContext, StackError, type StackService } from './service.ts';
import { rel, type ServiceRecord } from './state.ts';

const NODES = 3;
const BUS_OFFSET = 10_000;
/**
 * Client ports come from 10000-19999, so their bus ports (20000-29999) can never be another node's client port,
 * and both stay below the kernel's ephemeral range (32768+) that outgoing connections and OS-picked ports use.
 */
const PORT_MIN = 10_000;
const PORT_MAX = 19_999;
const NODE_TIMEOUT_MS = 5_000;
/** redis-cli colours its `--cluster` output even into a pipe. */
const ANSI_COLOR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');

interface NodeProc extends DetachedProcess {
  port: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The seed URLs of an endpoint (`redis://h1:p1,redis://h2:p2,…`). */
export function clusterSeedUrls(endpoint: string): string[] {
  return endpoint
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
}

/** Resolves when `CLUSTER INFO` on this node says `cluster_state:ok`. */
async function nodeClusterOk(url: string): Promise<void> {
  const client = probeClient(url);
  let info: string;
  try {
    await client.connect();
    info = String(await client.call('CLUSTER', 'INFO'));
  } catch (err) {
    throw new Error(`${url}: ${(err as Error).message}`);
  } finally {
    client.disconnect();
  }
  const state = /^cluster_state:(\w+)/m.exec(info)?.[1];
  if (state !== 'ok') throw new Error(`${url}: cluster_state:${state ?? '?'}`);
}

async function nodePing(port: number): Promise<void> {
  const client = probeClient(`redis://${LOCALHOST}:${port}`);
  try {
    await client.connect();
    await client.ping();
  } finally {
    client.disconnect();
  }
}

async function usable(port: number): Promise<boolean> {
  return (await isPortFree(port)) && (await isPortFree(port + BUS_OFFSET));
}

/** The previous ports when they (and their bus ports) are all free, else new random ones in PORT_MIN..PORT_MAX. */
async function pickPorts(previous: number[] | undefined): Promise<{ ports: number[]; reused: boolean }> {
  if (previous?.length === NODES && (await Promise.all(previous.map(usable))).every(Boolean)) {
    return { ports: previous, reused: true };
  }
  const ports: number[] = [];
  for (let attempt = 0; ports.length < NODES && attempt < 1_000; attempt++) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN + 1));
    if (!ports.includes(port) && (await usable(port))) ports.push(port);
  }
  if (ports.length < NODES) {
    throw new StackError(
      `redis-cluster: no ${NODES} free ports (with free port+${BUS_OFFSET}) in ${PORT_MIN}-${PORT_MAX}`,
    );
  }
  return { ports, reused: false };
}

function recordedPorts(record: ServiceRecord | undefined): number[] | undefined {
  if (!record) return undefined;
  const ports = Array.from({ length: NODES }, (_, i) => record.ports[`node${i + 1}`]);
  return ports.every((p) => typeof p === 'number') ? (ports as number[]) : undefined;
}

/** `port:pid:startTime,…` in the record's meta. */
function recordedNodes(record: ServiceRecord): NodeProc[] {
  const text = record.meta?.nodes;
  if (typeof text !== 'string')
    return [{ port: record.ports.node1 ?? 0, pid: record.pid, startTime: record.startTime }];
  return text.split(',').map((entry) => {
    const [port, pid, startTime] = entry.split(':');
    return { port: Number(port), pid: Number(pid), startTime: startTime ?? '' };
  });
}

async function stopNodes(nodes: readonly NodeProc[], ctx: ServiceContext): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      const result = await stopProcess(n.pid, n.startTime);
      if (result !== 'not-running') ctx.log(`stopped node ${n.port} pid ${n.pid} (${result})`);
    }),
  );
}

const nodeDir = (ctx: ServiceContext, port: number) =>
  path.join(ctx.paths.dir, 'redis-cluster', String(port));
const nodeConf = (port: number) => `nodes-${port}.conf`;

async function spawnNode(bin: string, ctx: ServiceContext, port: number): Promise<NodeProc> {
  const dir = nodeDir(ctx, port);
  mkdirSync(dir, { recursive: true });
  const proc = await spawnDetached(
    bin,
    [
      '--port',
      String(port),
      '--bind',
      LOCALHOST,
      '--protected-mode',
      'yes',
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      nodeConf(port),
      '--cluster-node-timeout',
      String(NODE_TIMEOUT_MS),
      '--dir',
      dir,
      ...REDIS_DURABILITY_ARGS,
    ],
    { cwd: dir, env: ctx.env, logFile: path.join(ctx.paths.logsDir, `redis-cluster-${port}.log`) },
  );
  return { ...proc, port };
}

/** Polls until `check` passes; fails when a node process exits or after `timeoutMs`. */
async function until(
  what: string,
  nodes: readonly NodeProc[],
  check: () => Promise<void>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      const dead = nodes.find((n) => !isAlive(n.pid, n.startTime));
      if (dead)
        throw new StackError(`redis-cluster: node ${dead.port} (pid ${dead.pid}) exited before ${what}`);
      if (Date.now() > deadline) {
        throw new StackError(
          `redis-cluster: ${what} not reached in ${timeoutMs / 1000} s (${(err as Error).message})`,
        );
      }
    }
    await sleep(100);
  }
}

export const redisClusterService: StackService = {
  name: 'redis-cluster',
  envVar: 'REDIS_CLUSTER_URL',
  readyTimeoutMs: 30_000,
  optional: true,

  async health(endpoint) {
    const seeds = clusterSeedUrls(endpoint);
    if (!seeds.length) throw new Error('no seed URL');
    await Promise.all(seeds.map(nodeClusterOk));
  },

  async start(ctx, previous) {
    const bin = await ensureRedisServer(ctx);
    const cli = which('redis-cli', ctx.env);
    if (!cli)
      throw new StackError('redis-cluster: `redis-cli` is not on PATH (Debian: apt-get install redis-tools)');
    // Nodes of an earlier run that are still alive are ours: stop them before reusing their ports.
    if (previous) await stopNodes(recordedNodes(previous), ctx);

    const { ports, reused } = await pickPorts(recordedPorts(previous));
    const logFile = path.join(ctx.paths.logsDir, 'redis-cluster.log');
    const urls = ports.map((p) => `redis://${LOCALHOST}:${p}`);
    const note = (line: string) => appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);

    const launch = async (): Promise<NodeProc[]> => {
      const nodes = await Promise.all(ports.map((p) => spawnNode(bin, ctx, p)));
      try {
        await until(
          'answering PING',
          nodes,
          async () => void (await Promise.all(ports.map(nodePing))),
          15_000,
        );
      } catch (err) {
        await stopNodes(nodes, ctx);
        throw err;
      }
      return nodes;
    };

    let nodes: NodeProc[] | undefined;
    if (reused && ports.every((p) => existsSync(path.join(nodeDir(ctx, p), nodeConf(p))))) {
      note(`restarting nodes ${ports.join(', ')} from their nodes.conf`);
      nodes = await launch();
      try {
        await until(
          'cluster_state:ok',
          nodes,
          async () => void (await Promise.all(urls.map(nodeClusterOk))),
          15_000,
        );
        ctx.log(`rejoined the existing cluster on ${ports.join(', ')}`);
      } catch (err) {
        note(`${(err as Error).message}; recreating the cluster`);
        ctx.log(`${(err as Error).message}; recreating the cluster`);
        await stopNodes(nodes, ctx);
        nodes = undefined;
      }
    }
    if (!nodes) {
      // `--cluster create` refuses nodes that already know a cluster or hold keys: start from empty dirs.
      // (Dirs of earlier ports are dropped too: their nodes.conf names a cluster that no longer exists.)
      for (const p of new Set([...ports, ...(recordedPorts(previous) ?? [])])) {
        rmSync(nodeDir(ctx, p), { recursive: true, force: true });
      }
      nodes = await launch();
      const args = ['--cluster', 'create', ...ports.map((p) => `${LOCALHOST}:${p}`)];
      args.push('--cluster-replicas', '0', '--cluster-yes');
      note(`redis-cli ${args.join(' ')}`);
      const created = await run(cli, args, { env: ctx.env });
      const output = created.output.replace(ANSI_COLOR, '').trimEnd();
      note(output);
      if (created.code !== 0 || !output.includes('All 16384 slots covered')) {
        await stopNodes(nodes, ctx);
        throw new StackError(
          `redis-cluster: \`redis-cli --cluster create\` failed (exit ${created.code}):\n${output.split('\n').slice(-15).join('\n')}`,
        );
      }
    }
    const [first] = nodes as [NodeProc, ...NodeProc[]];
    ctx.log(
      `started pids ${nodes.map((n) => n.pid).join(', ')} on ${LOCALHOST}:${ports.join(', ')}` +
        ` (bus +${BUS_OFFSET}; data in ${rel(ctx.paths, path.join(ctx.paths.dir, 'redis-cluster'))})`,
    );
    return {
      pid: first.pid,
      startTime: first.startTime,
      ports: Object.fromEntries(ports.map((p, i) => [`node${i + 1}`, p])),
      endpoint: urls.join(','),
      log: rel(ctx.paths, logFile),
      startedAt: new Date().toISOString(),
      meta: { nodes: nodes.map((n) => `${n.port}:${n.pid}:${n.startTime}`).join(',') },
    } satisfies ServiceRecord;
  },

  async stop(record, ctx) {
    await stopNodes(recordedNodes(record), ctx);
  },
};
