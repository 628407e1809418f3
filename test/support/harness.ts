/**
 * Test helpers for suites that run on the real broker and Redis: unique names per test, condition
 * waits (never fixed sleeps), topic readers, and cleanup of what a test created.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { Cluster, Redis } from 'ioredis';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { createKafka } from '../../src/kafka/client.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import { clusterSeeds } from '../../src/redis/client.ts';

export function uniqueId(label: string): string {
  return `${label}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export function stackEnv(): { brokers: string[]; redisUrl: string } {
  const brokers = process.env.KAFKA_BROKERS;
  const redisUrl = process.env.REDIS_URL;
  if (!brokers || !redisUrl)
    throw new Error('KAFKA_BROKERS and REDIS_URL must be set (the global setup does it)');
  return { brokers: brokers.split(','), redisUrl };
}

export function testLogger(): Logger {
  return createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent');
}

export function testKafka(): Kafka {
  return createKafka({ brokers: stackEnv().brokers, clientId: uniqueId('test'), logger: testLogger() });
}

/** Polls `check` until it returns a value other than undefined; fails with `describe()` on timeout. */
export async function waitFor<T>(
  check: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs?: number; intervalMs?: number; describe?: () => string | Promise<string> } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new Error(
        `condition not met in ${options.timeoutMs ?? 60_000} ms: ${(await options.describe?.()) ?? ''}`,
      );
    }
    await sleep(options.intervalMs ?? 200);
  }
}

/** Reads a topic from the beginning until `count` messages arrived (or the timeout passes). */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  count: number,
  timeoutMs = 60_000,
): Promise<KafkaMessage[]> {
  const consumer = kafka.consumer({ groupId: uniqueId('reader') });
  const messages: KafkaMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        messages.push(message);
      },
    });
    await waitFor(() => (messages.length >= count ? true : undefined), {
      timeoutMs,
      describe: () => `${messages.length} of ${count} messages on ${topic}`,
    });
  } finally {
    await consumer.disconnect();
  }
  return messages;
}

export async function deleteTopics(kafka: Kafka, topics: string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const mine = topics.filter((t) => existing.has(t));
    if (mine.length) await admin.deleteTopics({ topics: mine });
  } finally {
    await admin.disconnect();
  }
}

/** A Redis to clean up or inspect; the stack's standalone Redis when omitted. */
export interface RedisTarget {
  /** One URL, or (with `cluster`) comma-separated seed URLs. */
  url: string;
  cluster?: boolean;
}

/** Deletes every key under `prefix`; on a cluster target, on every master. */
export async function deleteKeys(prefix: string, target?: RedisTarget): Promise<void> {
  if (target?.cluster) {
    await forEachMaster(target.url, async (node) => {
      // Each key lives on the node that answered SCAN, so per-key commands on its own connection never cross slots.
      const keys = await scanAll(node, `${prefix}:*`);
      if (!keys.length) return;
      const res = (await keys.reduce((p, key) => p.unlink(key), node.pipeline()).exec()) ?? [];
      for (const [err] of res) if (err) throw err;
    });
    return;
  }
  const redis = new Redis(target?.url ?? stackEnv().redisUrl);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** The keys under `prefix` on each master of a Redis Cluster, by node (`host:port`). */
export async function clusterKeysByNode(prefix: string, url: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  await forEachMaster(url, async (node, address) => {
    out.set(address, await scanAll(node, `${prefix}:*`));
  });
  return out;
}

async function forEachMaster(
  url: string,
  fn: (node: Redis, address: string) => Promise<void>,
): Promise<void> {
  const cluster = new Cluster(clusterSeeds(url), { lazyConnect: true });
  try {
    await cluster.connect();
    await Promise.all(
      cluster.nodes('master').map((node) => fn(node, `${node.options.host}:${node.options.port}`)),
    );
  } finally {
    cluster.disconnect();
  }
}

async function scanAll(node: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

export function writeTempJson(name: string, content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'meterline-test-'));
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(content, null, 2));
  return path;
}

/** Validates envelopes on the failed-records topic against the published JSON Schema. */
export function failedRecordValidator() {
  const schema = JSON.parse(
    readFileSync(new URL('../../schemas/failed-record.v1.schema.json', import.meta.url), 'utf8'),
  );
  return addFormats.default(new Ajv2020({ strict: true, allErrors: true })).compile(schema);
}
