/**
 * A single-node Kafka of its own with a SASL_PLAINTEXT listener that takes OAUTHBEARER only, its tokens
 * checked by MskIamValidator (MSK IAM's rules: a SigV4-presigned kafka-cluster:Connect for one access key
 * and secret), beside a PLAINTEXT listener for the broker itself. The same jars as the local stack's
 * broker; the validator is compiled once into the user cache.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import {
  cacheHome,
  ensureKafkaLibs,
  kafkaDeployDir,
  newClusterId,
  resolveJava,
  SINGLE_NODE_SETTINGS,
} from '../../deploy/stack/kafka.ts';
import { freePorts } from '../../deploy/stack/ports.ts';
import { run } from '../../deploy/stack/proc.ts';
import { stackPaths } from '../../deploy/stack/state.ts';
import { waitFor } from './harness.ts';

export interface OauthBroker {
  /** The OAUTHBEARER listener. */
  saslBroker: string;
  /** The broker's own PLAINTEXT listener (for the test's checks, never for meterline). */
  plainBroker: string;
  /** The broker's output: the validator's lines among it. */
  log: () => string;
  stop: () => Promise<void>;
}

const SOURCE = path.join(import.meta.dirname, 'msk-iam', 'MskIamValidator.java');

async function compileValidator(libs: string): Promise<string> {
  const source = readFileSync(SOURCE);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const out = path.join(cacheHome(process.env), 'msk-iam-validator', hash);
  if (existsSync(path.join(out, 'MskIamValidator.class'))) return out;
  const javac = path.join(path.dirname(resolveJava(process.env)), 'javac');
  const tmp = `${out}.tmp-${process.pid}`;
  mkdirSync(tmp, { recursive: true });
  const result = await run(existsSync(javac) ? javac : 'javac', ['-cp', `${libs}/*`, '-d', tmp, SOURCE]);
  if (result.code !== 0) throw new Error(`javac failed:\n${result.output}`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(path.dirname(out), { recursive: true });
  renameSync(tmp, out);
  return out;
}

export async function startOauthBroker(o: {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}): Promise<OauthBroker> {
  const java = resolveJava(process.env);
  const libs = await ensureKafkaLibs({
    paths: stackPaths(),
    env: process.env,
    log: () => undefined,
    host: '127.0.0.1',
  });
  const classes = await compileValidator(libs);
  const dir = mkdtempSync(path.join(tmpdir(), 'meterline-oauth-broker-'));
  const [internal, sasl, controller] = await freePorts(3);
  // The broker logs in itself (a token it never sends: its own listeners are PLAINTEXT) by the unsecured
  // login handler, which needs a subject.
  const jaas = `org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker" accessKeyId="${o.accessKeyId}" secretAccessKey="${o.secretAccessKey}" region="${o.region}";`;
  const props = path.join(dir, 'server.properties');
  writeFileSync(
    props,
    `process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:${controller}
listeners=INTERNAL://127.0.0.1:${internal},SASL_PLAINTEXT://127.0.0.1:${sasl},CONTROLLER://127.0.0.1:${controller}
advertised.listeners=INTERNAL://127.0.0.1:${internal},SASL_PLAINTEXT://127.0.0.1:${sasl},CONTROLLER://127.0.0.1:${controller}
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=OAUTHBEARER
listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class=MskIamValidator
listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config=${jaas}
log.dirs=${path.join(dir, 'data')}
${SINGLE_NODE_SETTINGS}`,
  );
  const log4j = path.join(kafkaDeployDir(stackPaths().root), 'log4j2.yaml');
  const classpath = `${libs}/*:${classes}`;
  const format = await run(java, [
    '-Xmx256m',
    `-Dlog4j2.configurationFile=${log4j}`,
    '-cp',
    classpath,
    'kafka.tools.StorageTool',
    'format',
    '--standalone',
    '-t',
    newClusterId(),
    '-c',
    props,
  ]);
  if (format.code !== 0) throw new Error(`StorageTool format failed:\n${format.output}`);
  let output = '';
  const child: ChildProcess = spawn(
    java,
    ['-Xms128m', '-Xmx384m', `-Dlog4j2.configurationFile=${log4j}`, '-cp', classpath, 'kafka.Kafka', props],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (b: Buffer) => {
    output += b.toString('utf8');
  });
  child.stderr?.on('data', (b: Buffer) => {
    output += b.toString('utf8');
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const plain = new Kafka({
    brokers: [`127.0.0.1:${internal}`],
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
  }).admin();
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`the broker exited (${child.exitCode}):\n${output}`);
        try {
          await plain.connect();
          return (await plain.describeCluster()).brokers.length > 0 ? true : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 120_000, describe: () => `the OAUTHBEARER broker did not start:\n${output.slice(-3000)}` },
    );
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await plain.disconnect().catch(() => undefined);
  }
  return {
    saslBroker: `127.0.0.1:${sasl}`,
    plainBroker: `127.0.0.1:${internal}`,
    log: () => output,
    stop,
  };
}
