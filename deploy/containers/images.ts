/**
 * Test images of Kafka and Redis made from this host's own files, for machines without an image registry
 * (testcontainers through podman's Docker-compatible socket; see deploy/containers/README.md):
 *
 *   meterline-redis:7        Debian's redis-server and the libraries it links, FROM scratch
 *   meterline-kafka:8.0.0    Kafka 4.4 (the stack's Maven jars), a jlink'd JRE, bash, dash and sleep, in the
 *                            Confluent image layout that @testcontainers/kafka drives (hence a Confluent-like
 *                            tag: the module picks KRaft mode only for tags >= 8.0.0)
 *
 * Each is built through the engine's API from a staging folder in the user cache (outside the clone), and
 * again only when its inputs change: the image carries a `meterline.key` label with a hash of them.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { GenericContainer, getContainerRuntimeClient, ImageName } from 'testcontainers';
import { cacheHome, ensureKafkaLibs, KAFKA_VERSION, kafkaDeployDir } from '../stack/kafka.ts';
import { stackPaths } from '../stack/state.ts';

export const LOCAL_REDIS_IMAGE = 'meterline-redis:7';
export const LOCAL_KAFKA_IMAGE = 'meterline-kafka:8.0.0';

/** Where the broker's files live in the image; run.sh below uses the same paths. */
const KAFKA_HOME = '/opt/kafka';

/**
 * Confluent's entry point, as @testcontainers/kafka expects it: KAFKA_* variables become server properties
 * (KAFKA_FOO_BAR → foo.bar, `__` → `_`, `___` → `-`), storage is formatted once, then the broker runs.
 */
const RUN_SCRIPT = `#!/bin/bash
set -euo pipefail
props=/etc/kafka/kafka.properties
: >"$props"
for name in $(compgen -e); do
  case "$name" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=\${name#KAFKA_}
  key=\${key,,}
  key=\${key//___/-}
  key=\${key//__/@}
  key=\${key//_/.}
  key=\${key//@/_}
  printf '%s=%s\\n' "$key" "\${!name}" >>"$props"
done
[[ -v KAFKA_LOG_DIRS ]] || echo 'log.dirs=/var/lib/kafka/data' >>"$props"
java=/opt/java/bin/java
log4j=-Dlog4j2.configurationFile=${KAFKA_HOME}/log4j2.yaml
# The image comes formatted (one JVM start less); a log.dirs of the caller's choosing is formatted here.
if [[ ! -f \${KAFKA_LOG_DIRS:-/var/lib/kafka/data}/meta.properties ]]; then
  "$java" -Xmx256m "$log4j" -cp '${KAFKA_HOME}/libs/*' kafka.tools.StorageTool format --ignore-formatted \\
    -t "\${CLUSTER_ID:?}" -c "$props"
fi
# shellcheck disable=SC2086 # the heap options are several words
exec "$java" \${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \\
  -Djava.awt.headless=true "$log4j" -cp '${KAFKA_HOME}/libs/*' kafka.Kafka "$props"
`;

/** What Kafka 4.4 and its dependencies load from the JDK (a broader set than jdeps finds: reflection). */
const JRE_MODULES = [
  'java.base',
  'java.compiler',
  'java.desktop',
  'java.instrument',
  'java.logging',
  'java.management',
  'java.naming',
  'java.net.http',
  'java.rmi',
  'java.scripting',
  'java.security.jgss',
  'java.security.sasl',
  'java.sql',
  'java.xml',
  'jdk.crypto.ec',
  'jdk.management',
  'jdk.naming.dns',
  'jdk.unsupported',
  'jdk.zipfs',
];

export interface BuildOptions {
  /** Repository root (default: two levels above this file). */
  root?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

/** An executable on PATH, resolved through symlinks. */
function realWhich(cmd: string): string {
  const found = execFileSync('bash', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
  if (!found) throw new Error(`${cmd} not found on PATH`);
  return execFileSync('readlink', ['-f', found], { encoding: 'utf8' }).trim();
}

/** The shared libraries a binary links (absolute paths as the loader finds them, the loader included). */
function linkedLibs(file: string): string[] {
  const out = execFileSync('ldd', [file], { encoding: 'utf8' });
  return [...out.matchAll(/(\/\S+)/g)].map((m) => m[1] as string);
}

/** Copies `src` to `rootfs` + `dest` (following symlinks), creating folders. */
function put(rootfs: string, src: string, dest = src): void {
  const target = path.join(rootfs, dest);
  mkdirSync(path.dirname(target), { recursive: true });
  copyFileSync(src, target);
  chmodSync(target, statSync(src).mode & 0o7777);
}

/** Puts binaries and every library they (and the given shared objects) link into the rootfs. */
function putWithLibs(
  rootfs: string,
  binaries: Array<[src: string, dest: string]>,
  sharedObjects: string[] = [],
) {
  const libs = new Set<string>();
  for (const [src] of binaries) for (const l of linkedLibs(src)) libs.add(l);
  for (const so of sharedObjects) {
    try {
      for (const l of linkedLibs(so)) libs.add(l);
    } catch {
      // not dynamically linked
    }
  }
  for (const [src, dest] of binaries) put(rootfs, src, dest);
  for (const l of libs) if (!l.startsWith(rootfs)) put(rootfs, l);
}

function hashOf(parts: string[]): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

/** A cheap fingerprint of files: path, size and mtime (the inputs are installed packages and a jar cache). */
function fileFingerprint(files: string[]): string[] {
  return files.map((f) => {
    const s = statSync(f);
    return `${f} ${s.size} ${s.mtimeMs}`;
  });
}

async function imageKey(image: string): Promise<string | undefined> {
  const client = await getContainerRuntimeClient();
  const name = ImageName.fromString(image);
  if (!(await client.image.exists(name))) return undefined;
  return (await client.image.inspect(name)).Config?.Labels?.['meterline.key'];
}

/** Builds `image` from `stage` (a Containerfile plus rootfs/) unless one with the same key is there. */
async function buildIfChanged(
  image: string,
  key: string,
  stage: string,
  fill: (rootfs: string) => void | Promise<void>,
  containerfile: string,
  log: (line: string) => void,
): Promise<'kept' | 'built'> {
  if ((await imageKey(image)) === key) return 'kept';
  const t0 = Date.now();
  // A staging folder of this process's own (two runs may build at once); the image keeps what it needs.
  rmSync(stage, { recursive: true, force: true });
  try {
    const rootfs = path.join(stage, 'rootfs');
    mkdirSync(rootfs, { recursive: true });
    await fill(rootfs);
    // No EXPOSE: podman reports unpublished exposed ports as bindings, and testcontainers then waits for them.
    writeFileSync(
      path.join(stage, 'Containerfile'),
      `FROM scratch\nCOPY rootfs/ /\nLABEL meterline.key=${key}\n${containerfile}`,
    );
    await GenericContainer.fromDockerfile(stage, 'Containerfile').build(image, { deleteOnExit: false });
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  log(`built ${image} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return 'built';
}

function minimalEtc(rootfs: string): void {
  mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
  const tmp = path.join(rootfs, 'tmp');
  mkdirSync(tmp, { recursive: true });
  chmodSync(tmp, 0o1777);
}

export async function buildRedisImage(options: BuildOptions = {}): Promise<'kept' | 'built'> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const server = realWhich('redis-server');
  const libs = linkedLibs(server);
  const key = hashOf(['redis-v1', ...fileFingerprint([server, ...libs])]);
  const stage = path.join(cacheHome(env), 'containers', `redis-build-${process.pid}`);
  return buildIfChanged(
    LOCAL_REDIS_IMAGE,
    key,
    stage,
    (rootfs) => {
      minimalEtc(rootfs);
      mkdirSync(path.join(rootfs, 'data'), { recursive: true });
      putWithLibs(rootfs, [[server, '/usr/bin/redis-server']]);
    },
    'WORKDIR /data\nCMD ["/usr/bin/redis-server", "--protected-mode", "no"]\n',
    log,
  );
}

/** @testcontainers/kafka's fixed cluster id and KRaft controller, so the image's storage fits its brokers. */
const TC_CLUSTER_ID = '4L6g3nShT-eMCtK--X86sw';

function formatStorage(dataDir: string, jars: string, log4j: string, stage: string): void {
  const props = path.join(stage, 'format.properties');
  writeFileSync(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      'controller.quorum.voters=1@localhost:9094',
      'controller.listener.names=CONTROLLER',
      'listeners=PLAINTEXT://0.0.0.0:9093,BROKER://0.0.0.0:9092,CONTROLLER://0.0.0.0:9094',
      'advertised.listeners=PLAINTEXT://localhost:9093,BROKER://localhost:9092',
      'listener.security.protocol.map=BROKER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'inter.broker.listener.name=BROKER',
      `log.dirs=${dataDir}`,
      '',
    ].join('\n'),
  );
  mkdirSync(dataDir, { recursive: true });
  execFileSync(realWhich('java'), [
    '-Xmx256m',
    `-Dlog4j2.configurationFile=${log4j}`,
    '-cp',
    `${jars}/*`,
    'kafka.tools.StorageTool',
    'format',
    '-t',
    TC_CLUSTER_ID,
    '-c',
    props,
  ]);
}

export async function buildKafkaImage(options: BuildOptions = {}): Promise<'kept' | 'built'> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const root = options.root ?? path.resolve(import.meta.dirname, '..', '..');
  const paths = stackPaths(root);
  const jars = await ensureKafkaLibs({ paths, env, log: (l) => log(`[kafka] ${l}`), host: '127.0.0.1' });
  const jarFiles = readdirSync(jars)
    .filter((f) => f.endsWith('.jar'))
    .sort()
    .map((f) => path.join(jars, f));
  const javaHome = path.dirname(path.dirname(realWhich('java')));
  const jlink = path.join(javaHome, 'bin', 'jlink');
  if (!existsSync(jlink))
    throw new Error(`no jlink next to ${javaHome}/bin/java: install a JDK (default-jdk-headless)`);
  const log4j = path.join(kafkaDeployDir(root), 'log4j2.yaml');
  const tools = ['bash', 'dash', 'sleep'].map(realWhich);
  const key = hashOf([
    'kafka-v2',
    KAFKA_VERSION,
    RUN_SCRIPT,
    JRE_MODULES.join(','),
    // The repository's file by content: every CI run is a fresh clone, with new paths and times.
    readFileSync(log4j, 'utf8'),
    ...fileFingerprint([jlink, ...tools, ...jarFiles]),
  ]);
  const stage = path.join(cacheHome(env), 'containers', `kafka-build-${process.pid}`);
  return buildIfChanged(
    LOCAL_KAFKA_IMAGE,
    key,
    stage,
    (rootfs) => {
      minimalEtc(rootfs);
      const jre = path.join(rootfs, 'opt', 'java');
      mkdirSync(path.dirname(jre), { recursive: true });
      execFileSync(jlink, [
        '--add-modules',
        JRE_MODULES.join(','),
        '--strip-debug',
        '--no-header-files',
        '--no-man-pages',
        // Uncompressed modules and a CDS archive: the broker starts seconds sooner on a busy machine.
        '--generate-cds-archive',
        '--output',
        jre,
      ]);
      const sharedObjects = readdirSync(path.join(jre, 'lib'), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.so'))
        .map((f) => path.join(jre, 'lib', f));
      putWithLibs(
        rootfs,
        [
          [tools[0] as string, '/bin/bash'],
          [tools[1] as string, '/bin/sh'],
          [tools[2] as string, '/bin/sleep'],
        ],
        [path.join(jre, 'bin', 'java'), ...sharedObjects],
      );
      for (const jar of jarFiles) put(rootfs, jar, path.join(KAFKA_HOME, 'libs', path.basename(jar)));
      put(rootfs, log4j, path.join(KAFKA_HOME, 'log4j2.yaml'));
      mkdirSync(path.join(rootfs, 'etc/kafka'), { recursive: true });
      formatStorage(path.join(rootfs, 'var/lib/kafka/data'), jars, log4j, path.dirname(rootfs));
      const run = path.join(rootfs, 'etc/confluent/docker/run');
      mkdirSync(path.dirname(run), { recursive: true });
      writeFileSync(run, RUN_SCRIPT, { mode: 0o755 });
    },
    'ENV PATH=/opt/java/bin:/bin\nCMD ["/etc/confluent/docker/run"]\n',
    log,
  );
}
