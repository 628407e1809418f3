/**
 * Apache Kafka 4.4, KRaft, one combined broker+controller node on 127.0.0.1, run straight from the Maven jars:
 * `java -cp '<libs>/*' kafka.Kafka server.properties` (no tarball, no bin/*.sh).
 *
 * The jars are copied once by Maven into `${XDG_CACHE_HOME:-~/.cache}/meterline/kafka-<version>/libs` (outside the
 * clone, so a fresh clone starts warm), with a marker written after a complete copy.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { LOCALHOST, reuseOrPickPorts } from './ports.ts';
import { run, spawnDetached, which } from './proc.ts';
import { type ServiceContext, StackError, type StackService } from './service.ts';
import { rel, type ServiceRecord } from './state.ts';

export const KAFKA_VERSION = '4.4.0';

const JVM_HEAP = ['-Xms256m', '-Xmx512m'];
const JVM_OPTS = [
  '-XX:+UseG1GC',
  '-XX:MaxGCPauseMillis=20',
  '-XX:InitiatingHeapOccupancyPercent=35',
  '-XX:+ExitOnOutOfMemoryError',
  '-Djava.awt.headless=true',
  // Keep log4j alive during JVM shutdown, so the broker's own shutdown lines reach the log.
  '-Dlog4j2.shutdownHookEnabled=false',
];

export function kafkaDeployDir(root: string): string {
  return path.join(root, 'deploy', 'kafka');
}

export function cacheHome(env: NodeJS.ProcessEnv): string {
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'meterline');
}

/** The Java launcher: METERLINE_JAVA, else $JAVA_HOME/bin/java, else `java` on PATH. */
export function resolveJava(env: NodeJS.ProcessEnv): string {
  if (env.METERLINE_JAVA) return env.METERLINE_JAVA;
  if (env.JAVA_HOME) {
    const candidate = path.join(env.JAVA_HOME, 'bin', 'java');
    if (existsSync(candidate)) return candidate;
  }
  const java = which('java', env);
  if (!java) {
    throw new StackError(
      'kafka: no `java` found. Install a JDK 17 or newer (Debian: apt-get install -y openjdk-17-jre-headless), ' +
        'or set JAVA_HOME, or point KAFKA_BROKERS at a running broker.',
    );
  }
  return java;
}

interface LibsMarker {
  pomSha256: string;
  jars: string[];
}

/**
 * Makes sure the broker jars are in the user cache and returns the libs dir. Maven runs only when the marker is
 * missing, was written for a different pom, or a listed jar is gone.
 */
export async function ensureKafkaLibs(ctx: ServiceContext): Promise<string> {
  const pom = path.join(kafkaDeployDir(ctx.paths.root), 'pom.xml');
  const pomSha256 = createHash('sha256').update(readFileSync(pom)).digest('hex');
  const base = path.join(cacheHome(ctx.env), `kafka-${KAFKA_VERSION}`);
  const libs = path.join(base, 'libs');
  const markerFile = path.join(base, 'libs.complete.json');
  try {
    const marker = JSON.parse(readFileSync(markerFile, 'utf8')) as LibsMarker;
    if (
      marker.pomSha256 === pomSha256 &&
      marker.jars.length > 0 &&
      marker.jars.every((jar) => existsSync(path.join(libs, jar)))
    ) {
      return libs;
    }
  } catch {
    // no marker yet
  }

  const mvn = which('mvn', ctx.env);
  if (!mvn) {
    throw new StackError(
      'kafka: Maven (`mvn`) is needed once to fetch the broker jars. Install it (Debian: apt-get install -y maven), ' +
        'or point KAFKA_BROKERS at a running broker.',
    );
  }
  ctx.log(`fetching Kafka ${KAFKA_VERSION} jars with Maven into ${libs} (first run only)…`);
  const t0 = Date.now();
  mkdirSync(base, { recursive: true });
  rmSync(markerFile, { force: true });
  const tmp = path.join(base, `libs.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const result = await run(mvn, [
    '-q',
    '-B',
    'dependency:copy-dependencies',
    '-DincludeScope=runtime',
    `-DoutputDirectory=${tmp}`,
    '-f',
    pom,
  ]);
  if (result.code !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new StackError(`kafka: Maven failed (exit ${result.code}):\n${result.output.trim().slice(-4000)}`);
  }
  const jars = readdirSync(tmp)
    .filter((f) => f.endsWith('.jar'))
    .sort();
  if (!jars.some((j) => j.startsWith(`kafka_2.13-${KAFKA_VERSION}`))) {
    throw new StackError(
      `kafka: Maven finished but ${rel(ctx.paths, tmp)} has no kafka_2.13-${KAFKA_VERSION}.jar`,
    );
  }
  rmSync(libs, { recursive: true, force: true });
  renameSync(tmp, libs);
  const marker: LibsMarker = { pomSha256, jars };
  writeFileSync(markerFile, `${JSON.stringify(marker, null, 2)}\n`);
  ctx.log(`${jars.length} jars ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return libs;
}

/** A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting with '-'. */
export function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

export interface KafkaPorts {
  broker: number;
  controller: number;
}

/** A single node's settings, beside its listeners (also used by tests that start a broker of their own). */
export const SINGLE_NODE_SETTINGS = `# Single node: every internal topic has replication factor 1 and one partition.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# The app creates its topics explicitly.
auto.create.topics.enable=false
# A week, so the usage topic can be replayed.
log.retention.hours=168
log.segment.bytes=67108864

num.network.threads=2
num.io.threads=4
`;

export function serverProperties(ports: KafkaPorts, logDir: string, host = LOCALHOST): string {
  const broker = `${host}:${ports.broker}`;
  const controller = `${LOCALHOST}:${ports.controller}`;
  return `# Generated by deploy/stack/kafka.ts on every start; edit the template there, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=${controller}
listeners=PLAINTEXT://${broker},CONTROLLER://${controller}
advertised.listeners=PLAINTEXT://${broker},CONTROLLER://${controller}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${logDir}

${SINGLE_NODE_SETTINGS}`;
}

async function formatStorage(
  ctx: ServiceContext,
  java: string,
  libs: string,
  propsFile: string,
  log4j: string,
  logFile: string,
): Promise<string> {
  const clusterId = newClusterId();
  ctx.log(`formatting storage (cluster id ${clusterId})…`);
  const result = await run(java, [
    '-Xmx256m',
    `-Dlog4j2.configurationFile=${log4j}`,
    '-cp',
    `${libs}/*`,
    'kafka.tools.StorageTool',
    'format',
    '--standalone',
    '-t',
    clusterId,
    '-c',
    propsFile,
  ]);
  writeFileSync(logFile, `\n==== ${new Date().toISOString()} StorageTool format\n${result.output}`, {
    flag: 'a',
  });
  if (result.code !== 0) {
    throw new StackError(`kafka: StorageTool format failed (exit ${result.code}):\n${result.output.trim()}`);
  }
  return clusterId;
}

export const kafkaService: StackService = {
  name: 'kafka',
  envVar: 'KAFKA_BROKERS',
  readyTimeoutMs: 90_000,

  async health(endpoint) {
    const kafka = new Kafka({
      clientId: 'meterline-stack-health',
      brokers: endpoint.split(',').map((b) => b.trim()),
      connectionTimeout: 2_000,
      requestTimeout: 5_000,
      retry: { retries: 0 },
      logLevel: logLevel.NOTHING,
    });
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      if (cluster.brokers.length === 0) throw new Error('no brokers in metadata');
    } finally {
      await admin.disconnect().catch(() => {});
    }
  },

  async start(ctx, previous) {
    const java = resolveJava(ctx.env);
    const libs = await ensureKafkaLibs(ctx);
    const log4j = path.join(kafkaDeployDir(ctx.paths.root), 'log4j2.yaml');
    const dataDir = path.join(ctx.paths.dir, 'kafka-data');
    const propsFile = path.join(ctx.paths.dir, 'kafka-server.properties');
    const logFile = path.join(ctx.paths.logsDir, 'kafka.log');

    const { ports, reused } = await reuseOrPickPorts(['broker', 'controller'] as const, previous?.ports);
    const formatted = existsSync(path.join(dataDir, 'meta.properties'));
    let clusterId = typeof previous?.meta?.clusterId === 'string' ? previous.meta.clusterId : undefined;
    if (formatted && !(reused && clusterId)) {
      // The KRaft bootstrap checkpoint holds the controller endpoint it was formatted with: new ports need a
      // fresh data dir. Topics and data in it are lost.
      ctx.log(
        `ports changed (or no record of the format): wiping ${rel(ctx.paths, dataDir)} and reformatting`,
      );
      rmSync(dataDir, { recursive: true, force: true });
    }
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(propsFile, serverProperties(ports, dataDir, ctx.host));
    if (!existsSync(path.join(dataDir, 'meta.properties'))) {
      clusterId = await formatStorage(ctx, java, libs, propsFile, log4j, logFile);
    } else {
      ctx.log(`reusing formatted storage in ${rel(ctx.paths, dataDir)}`);
    }

    const proc = await spawnDetached(
      java,
      [
        ...JVM_HEAP,
        ...JVM_OPTS,
        `-Dlog4j2.configurationFile=${log4j}`,
        '-cp',
        `${libs}/*`,
        'kafka.Kafka',
        propsFile,
      ],
      { cwd: ctx.paths.dir, env: ctx.env, logFile },
    );
    ctx.log(`started pid ${proc.pid} on ${ctx.host}:${ports.broker} (controller ${ports.controller})`);
    return {
      ...proc,
      ports,
      endpoint: `${ctx.host}:${ports.broker}`,
      log: rel(ctx.paths, logFile),
      startedAt: new Date().toISOString(),
      meta: { clusterId: clusterId ?? '' },
    } satisfies ServiceRecord;
  },
};
