/**
 * Redis connections and Lua script registration. Scripts live in ./lua/<name>.lua, each with a header
 * that lists KEYS and ARGV; only the typed wrappers in the stage modules call them.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';

export const SCRIPT_NAMES = ['applyBatch', 'finalizeHour', 'markEmitted'] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

type ScriptArg = string | number;

/** A Redis client with meterline's scripts defined on it. Keys are passed with their count first. */
export interface ScriptedRedis extends Redis {
  applyBatch(numKeys: number, ...args: ScriptArg[]): Promise<number[]>;
  finalizeHour(numKeys: number, ...args: ScriptArg[]): Promise<string[] | number[]>;
  markEmitted(numKeys: number, ...args: ScriptArg[]): Promise<number>;
}

const SOURCES = Object.fromEntries(
  SCRIPT_NAMES.map((name) => [name, readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8')]),
) as Record<ScriptName, string>;

export function createRedis(url: string, options: { lazyConnect?: boolean } = {}): ScriptedRedis {
  const redis = new Redis(url, {
    lazyConnect: options.lazyConnect ?? false,
    maxRetriesPerRequest: 20,
    enableAutoPipelining: false,
  });
  for (const name of SCRIPT_NAMES) redis.defineCommand(name, { lua: SOURCES[name] });
  return redis as ScriptedRedis;
}
