/**
 * Compares dedupe designs for the batch script on the running Redis (docs/state-v2.md):
 *   A  per-hour SET of event id strings, two ARGV per event (the script before state v2, kept in
 *      ./designs/applyBatch-sets.lua);
 *   B  the caller's in-memory index decides, Redis keeps 16-byte hashes per hour (src/redis/lua/applyBatch.lua);
 *   C  packed ARGV, but Redis dedupes: a per-hour SET of 16-byte binary hashes (./designs/dedupe-binary-set.lua).
 * For each: Redis time per event (the script's own TIME, start to end), argument bytes per event, and Redis
 * bytes per retained id (MEMORY USAGE); for B also the restore of 1M ids into the index (dedupe-restore.ts, the
 * bench's restore phase: written through WindowStore.applyBatch, restored by a new claim).
 * `node deploy/bench/dedupe-designs.ts [--batches 10] [--events 10000]`. A measurement: it asserts nothing.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createRedis } from '../../src/redis/client.ts';
import { aggregateField, Keys } from '../../src/redis/keys.ts';
import { hashId, ID_HASH_BYTES } from '../../src/state/id-hash.ts';
import { WindowStore } from '../../src/state/window-store.ts';
import type { HourGroup } from '../../src/state/window-types.ts';
import { runDedupeRestore } from './dedupe-restore.ts';

const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '10' },
    events: { type: 'string', default: '10000' },
    restore: { type: 'string', default: '1000000' },
  },
});
const BATCHES = Number(values.batches);
const EVENTS = Number(values.events);
const RESTORE = Number(values.restore);
const AGGREGATES = 800;
const HOUR = Date.parse('2026-11-27T10:00:00Z');
const TTL_S = 48 * 3600;
const redis = createRedis(process.env.REDIS_URL as string);
const run = `dedupe-designs-${Date.now()}`;
const say = (s: string) => process.stdout.write(`${s}\n`);
const here = new URL('./designs/', import.meta.url);
const scriptA = readFileSync(new URL('applyBatch-sets.lua', here), 'utf8');
const scriptC = readFileSync(new URL('dedupe-binary-set.lua', here), 'utf8');
// The script's own duration: Redis is single-threaded, so this is the time it holds the server.
const timed = (body: string) =>
  `local t0 = redis.call('TIME')\nlocal function __body()\n${body}\nend\nlocal r = __body()\nlocal t1 = redis.call('TIME')\nreturn { (t1[1] - t0[1]) * 1000000 + (t1[2] - t0[2]), r }`;

let seq = 0;
function batch(): HourGroup[] {
  const aggs = new Map<string, { field: string; op: 's'; ids: string[]; micros: number[] }>();
  for (let i = 0; i < EVENTS; i++) {
    const field = aggregateField(`c${i % AGGREGATES}`, 'calls');
    let a = aggs.get(field);
    if (!a) {
      a = { field, op: 's', ids: [], micros: [] };
      aggs.set(field, a);
    }
    a.ids.push(`b1-${String(seq++).padStart(9, '0')}`);
    a.micros.push(1_000_000 + (i % 7));
  }
  return [{ hourMs: HOUR, targetMs: HOUR, aggregates: [...aggs.values()] }];
}

const argBytes = (args: (string | number | Buffer)[]) =>
  args.reduce<number>((n, a) => n + (Buffer.isBuffer(a) ? a.length : Buffer.byteLength(String(a))), 0);

async function designA(): Promise<void> {
  const k = new Keys(`${run}-a`).partition({ topic: 'usage', partition: 0 });
  await redis.set(k.fence(), '1');
  let usec = 0;
  let bytes = 0;
  let held = '';
  for (let b = 0; b < BATCHES; b++) {
    const groups = batch();
    const keys = [k.checkpoint(), k.fence(), k.openHours(), k.lateAudit(), k.time()];
    const last = String((b + 1) * EVENTS - 1);
    const args: (string | number)[] = [1, held, last, TTL_S, groups.length, 10_000, HOUR, HOUR];
    for (const g of groups) {
      keys.push(k.aggregates(HOUR), k.seen(HOUR), k.finalized(HOUR));
      args.push(g.hourMs, g.targetMs ?? '', g.aggregates.length);
      for (const a of g.aggregates) {
        args.push(a.field, a.op, a.ids.length);
        for (let i = 0; i < a.ids.length; i++) args.push(a.ids[i] as string, a.micros[i] as number);
      }
    }
    bytes += argBytes(args);
    const [us] = (await redis.eval(timed(scriptA), keys.length, ...keys, ...args)) as [number];
    usec += us;
    held = last;
  }
  const mem = Number(await redis.memory('USAGE', k.seen(HOUR), 'SAMPLES', 0));
  report('A per-hour SET of id strings', usec, bytes, mem);
}

async function designB(): Promise<void> {
  const keys = new Keys(`${run}-b`);
  const p = { topic: 'usage', partition: 0 };
  const k = keys.partition(p);
  const store = new WindowStore(redis, keys, { dedupeTtlMs: TTL_S * 1000, finalizedTtlMs: TTL_S * 1000 });
  const { token } = await store.claim(p);
  const script = readFileSync(new URL('../../src/redis/lua/applyBatch.lua', import.meta.url), 'utf8');
  let usec = 0;
  let bytes = 0;
  let held = '';
  let jsMs = 0;
  for (let b = 0; b < BATCHES; b++) {
    const groups = batch();
    const index = await store.dedupe.ready(p, token, HOUR);
    const t = performance.now();
    const packed = store.dedupe.pack(index, groups, HOUR);
    jsMs += performance.now() - t;
    const last = String((b + 1) * EVENTS - 1);
    const ks = [k.checkpoint(), k.fence(), k.openHours(), k.lateAudit(), k.time(), k.dedupeHours()];
    const args: (string | number | Buffer)[] = [token, held, last, TTL_S, 1, 10_000, HOUR, HOUR, 0];
    for (const g of packed.groups) {
      ks.push(k.aggregates(HOUR), k.dedupeLog(HOUR), k.finalized(HOUR));
      args.push(g.hourMs, g.targetMs ?? '', g.hashes, g.aggregates.length);
      for (const a of g.aggregates) args.push(a.field, a.op, a.events, a.value);
    }
    bytes += argBytes(args);
    const [us] = (await redis.eval(timed(script), ks.length, ...ks, ...args)) as [number];
    packed.landed();
    usec += us;
    held = last;
  }
  const mem = Number(await redis.memory('USAGE', k.dedupeLog(HOUR), 'SAMPLES', 0));
  report('B index in memory, packed log in Redis', usec, bytes, mem);
  say(`   client: hash + index + pack ${((jsMs * 1e6) / (BATCHES * EVENTS)).toFixed(0)} ns/event`);
}

async function designC(): Promise<void> {
  const k = new Keys(`${run}-c`).partition({ topic: 'usage', partition: 0 });
  const words = new Uint32Array(4);
  let usec = 0;
  let bytes = 0;
  for (let b = 0; b < BATCHES; b++) {
    const groups = batch();
    const args: (string | number | Buffer)[] = [TTL_S];
    for (const a of (groups[0] as HourGroup).aggregates) {
      const hashes = Buffer.allocUnsafe(a.ids.length * ID_HASH_BYTES);
      const micros = Buffer.allocUnsafe(a.ids.length * 8);
      a.ids.forEach((id, i) => {
        hashId(id, words);
        for (let w = 0; w < 4; w++) hashes.writeUInt32LE(words[w] as number, i * 16 + w * 4);
        micros.writeBigInt64LE(BigInt(a.micros[i] as number), i * 8);
      });
      args.push(a.field, hashes, micros);
    }
    bytes += argBytes(args);
    const [us] = (await redis.eval(timed(scriptC), 2, k.aggregates(HOUR), k.seen(HOUR), ...args)) as [number];
    usec += us;
  }
  const mem = Number(await redis.memory('USAGE', k.seen(HOUR), 'SAMPLES', 0));
  report('C packed ARGV, Redis SET of 16-byte hashes', usec, bytes, mem);
}

function report(name: string, usec: number, bytes: number, mem: number): void {
  const n = BATCHES * EVENTS;
  say(
    `${name}: Redis ${(usec / n).toFixed(3)} µs/event, ${(bytes / n).toFixed(1)} argument bytes/event, ` +
      `${(mem / n).toFixed(1)} Redis bytes/retained id (${n} ids)`,
  );
}

/** The restore figure is the bench's own (dedupe-restore.ts): the product's write and claim path. */
async function restore(): Promise<void> {
  const r = await runDedupeRestore({ redisUrl: process.env.REDIS_URL as string, runId: run, ids: RESTORE });
  say(
    `restore of ${r.ids} ids: ${(r.restoreSeconds * 1000).toFixed(0)} ms (${r.restoredIds} in the index), ` +
      `Redis ${r.redisBytesPerId.toFixed(1)} bytes/id, RSS +${r.rssDeltaMb.toFixed(0)} MB`,
  );
}

try {
  await designA();
  await designB();
  await designC();
  await restore();
} finally {
  for (const d of ['a', 'b', 'c']) {
    const found = await redis.keys(`${run}-${d}*`);
    if (found.length) await redis.del(...found);
  }
  redis.disconnect();
}
