/**
 * Test helpers for suites that run on the real broker and Redis: unique names per test, condition
 * waits (never fixed sleeps), topic readers, and cleanup of what a test created.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { createKafka } from '../../src/kafka/client.ts';
import { createLogger, type Logger } from '../../src/log.ts';

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

export async function deleteKeys(prefix: string): Promise<void> {
  const redis = new Redis(stackEnv().redisUrl);
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

export function writeTempJson(name: string, content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'meterline-test-'));
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(content, null, 2));
  return path;
}
