/**
 * The Avro schema registry: Apicurio Registry 3.3 with its Confluent-compatible API (`/apis/ccompat/v7`), run
 * straight from the Maven Central tarball on Java 25 (3.3.x is compiled for Java 21+). Storage is the default
 * in-memory H2: subjects and schemas are lost on every restart.
 *
 * The server is unpacked once by Maven into `${XDG_CACHE_HOME:-~/.cache}/meterline/apicurio-<version>/app`
 * (outside the clone, so a fresh clone starts warm), with a marker written after a complete unpack.
 *
 * Two flags matter:
 * - `apicurio.rules.global.compatibility=BACKWARD`: Apicurio's default is NONE and it answers
 *   `GET /config/{subject}` with NONE where Confluent answers 404, so `@kafkajs/confluent-schema-registry`
 *   (which expects BACKWARD) refuses to register a second version of a subject it did not create.
 * - the Quarkus management interface (health, metrics) binds 0.0.0.0:9000 by default: it gets a free port on
 *   127.0.0.1 instead. Readiness is probed on the API itself (`GET /subjects`), which is what the app needs.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cacheHome } from './kafka.ts';
import { reuseOrPickPorts } from './ports.ts';
import { run, spawnDetached, which } from './proc.ts';
import { type ServiceContext, StackError, type StackService } from './service.ts';
import { rel, type ServiceRecord } from './state.ts';

export const APICURIO_VERSION = '3.3.3';
export const CCOMPAT_PATH = '/apis/ccompat/v7';
/** Apicurio 3.3 needs class-file version 65 (Java 21) or newer. */
const MIN_JAVA_MAJOR = 21;
const DEFAULT_JAVA_HOME = '/usr/lib/jvm/temurin-25-jdk-amd64';

const JVM_OPTS = ['-Xms64m', '-Xmx384m', '-XX:+ExitOnOutOfMemoryError', '-Djava.awt.headless=true'];

export function registryDeployDir(root: string): string {
  return path.join(root, 'deploy', 'registry');
}

/** The major version from a JDK's `release` file (`JAVA_VERSION="25.0.3"`), if it has one. */
function javaMajor(javaHome: string): number | undefined {
  try {
    const m = /^JAVA_VERSION="(\d+)/m.exec(readFileSync(path.join(javaHome, 'release'), 'utf8'));
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The Java 21+ launcher: $JAVA25_HOME/bin/java, else the Temurin 25 JDK in /usr/lib/jvm. */
export function resolveRegistryJava(env: NodeJS.ProcessEnv): string {
  const home = env.JAVA25_HOME || DEFAULT_JAVA_HOME;
  const java = path.join(home, 'bin', 'java');
  const hint =
    `Install a JDK ${MIN_JAVA_MAJOR}+ (e.g. Temurin 25) and set JAVA25_HOME to it, ` +
    'or point SCHEMA_REGISTRY_URL at a running Confluent-compatible registry.';
  if (!existsSync(java)) {
    throw new StackError(
      `registry: Apicurio ${APICURIO_VERSION} needs Java ${MIN_JAVA_MAJOR}+; ${java} does not exist` +
        `${env.JAVA25_HOME ? ' (JAVA25_HOME)' : ''}. ${hint}`,
    );
  }
  const major = javaMajor(home);
  if (major !== undefined && major < MIN_JAVA_MAJOR) {
    throw new StackError(
      `registry: Apicurio ${APICURIO_VERSION} needs Java ${MIN_JAVA_MAJOR}+; ${home} is Java ${major}. ${hint}`,
    );
  }
  return java;
}

interface AppMarker {
  pomSha256: string;
  version: string;
}

/**
 * Makes sure the unpacked server is in the user cache and returns its folder (the one holding
 * `quarkus-run.jar`). Maven runs only when the marker is missing, was written for a different pom, or the jar
 * is gone. The tarball itself stays in ~/.m2.
 */
export async function ensureApicurioApp(ctx: ServiceContext): Promise<string> {
  const pom = path.join(registryDeployDir(ctx.paths.root), 'pom.xml');
  const pomSha256 = createHash('sha256').update(readFileSync(pom)).digest('hex');
  const base = path.join(cacheHome(ctx.env), `apicurio-${APICURIO_VERSION}`);
  const app = path.join(base, 'app');
  const markerFile = path.join(base, 'app.complete.json');
  try {
    const marker = JSON.parse(readFileSync(markerFile, 'utf8')) as AppMarker;
    if (marker.pomSha256 === pomSha256 && existsSync(path.join(app, 'quarkus-run.jar'))) return app;
  } catch {
    // no marker yet
  }

  const mvn = which('mvn', ctx.env);
  if (!mvn) {
    throw new StackError(
      'registry: Maven (`mvn`) is needed once to fetch Apicurio Registry. Install it (Debian: apt-get install -y ' +
        'maven), or point SCHEMA_REGISTRY_URL at a running Confluent-compatible registry.',
    );
  }
  ctx.log(
    `fetching Apicurio Registry ${APICURIO_VERSION} (~159 MB) with Maven into ${app} (first run only)…`,
  );
  const t0 = Date.now();
  mkdirSync(base, { recursive: true });
  rmSync(markerFile, { force: true });
  const tmp = path.join(base, `app.tmp-${process.pid}`);
  const markers = path.join(base, `markers.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    const result = await run(mvn, [
      '-q',
      '-B',
      'dependency:unpack',
      `-DoutputDirectory=${tmp}`,
      // Unpack markers default to target/ in the clone; keep them with the cache (and drop them after).
      `-Dregistry.markersDirectory=${markers}`,
      '-f',
      pom,
    ]);
    if (result.code !== 0) {
      throw new StackError(
        `registry: Maven failed (exit ${result.code}):\n${result.output.trim().slice(-4000)}`,
      );
    }
    if (!existsSync(path.join(tmp, 'quarkus-run.jar'))) {
      throw new StackError(`registry: Maven finished but ${tmp} has no quarkus-run.jar`);
    }
    rmSync(app, { recursive: true, force: true });
    renameSync(tmp, app);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(markers, { recursive: true, force: true });
  }
  const marker: AppMarker = { pomSha256, version: APICURIO_VERSION };
  writeFileSync(markerFile, `${JSON.stringify(marker, null, 2)}\n`);
  ctx.log(`Apicurio ${APICURIO_VERSION} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return app;
}

export const registryService: StackService = {
  name: 'registry',
  envVar: 'SCHEMA_REGISTRY_URL',
  readyTimeoutMs: 120_000,

  async health(endpoint) {
    const url = `${endpoint.replace(/\/+$/, '')}/subjects`;
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) }).catch((err: Error) => {
      const cause = err.cause as { code?: string; message?: string } | undefined;
      throw new Error(`GET ${new URL(url).pathname}: ${cause?.code ?? cause?.message ?? err.message}`);
    });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`GET ${new URL(url).pathname} answered ${res.status}`);
    if (!Array.isArray(JSON.parse(body)))
      throw new Error(`GET ${new URL(url).pathname} is not a subject list`);
  },

  async start(ctx, previous) {
    const java = resolveRegistryJava(ctx.env);
    const app = await ensureApicurioApp(ctx);
    const { ports } = await reuseOrPickPorts(['http', 'management'] as const, previous?.ports);
    const logFile = path.join(ctx.paths.logsDir, 'registry.log');
    const proc = await spawnDetached(
      java,
      [
        ...JVM_OPTS,
        `-Dquarkus.http.host=${ctx.host}`,
        `-Dquarkus.http.port=${ports.http}`,
        `-Dquarkus.management.host=${ctx.host}`,
        `-Dquarkus.management.port=${ports.management}`,
        '-Dapicurio.rules.global.compatibility=BACKWARD',
        '-Dquarkus.banner.enabled=false',
        '-jar',
        path.join(app, 'quarkus-run.jar'),
      ],
      { cwd: ctx.paths.dir, env: ctx.env, logFile },
    );
    ctx.log(`started pid ${proc.pid} on ${ctx.host}:${ports.http} (management ${ports.management})`);
    return {
      ...proc,
      ports,
      endpoint: `http://${ctx.host}:${ports.http}${CCOMPAT_PATH}`,
      log: rel(ctx.paths, logFile),
      startedAt: new Date().toISOString(),
      meta: { version: APICURIO_VERSION },
    } satisfies ServiceRecord;
  },
};
