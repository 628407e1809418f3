import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';

/** What every phase module of the bench is given, and the set-up the phases against the AWS emulator share. */

export interface PhaseOptions {
  brokers: string;
  redisUrl: string;
  /** Prefix of the phase's topics, groups and Redis keys. */
  runId: string;
  say?: (line: string) => void;
}

/** The SDK reads credentials from the environment; the emulator only needs some. */
export function emulatorCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID ??= 'bench';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'bench';
}

/** A temp folder for a phase's configuration files (plan, customers), removed with `remove()`. */
export function configFiles(prefix: string): {
  file(name: string, content: unknown): string;
  remove(): void;
} {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return {
    file(name, content) {
      const p = path.join(dir, name);
      writeFileSync(p, JSON.stringify(content));
      return p;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** What a pipeline of the phase needs to reach the stack and the emulator. */
export function emulatorEnv(o: PhaseOptions, emulatorUrl: string): Record<string, string> {
  return {
    KAFKA_BROKERS: o.brokers,
    REDIS_URL: o.redisUrl,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'bench',
    AWS_SECRET_ACCESS_KEY: 'bench',
    AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulatorUrl,
  };
}

/** Deletes every Redis key under the phase's prefix (`<prefix>:…`). */
export async function deleteKeysUnder(redis: Pick<Redis, 'scan' | 'unlink'>, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
    if (keys.length) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}
