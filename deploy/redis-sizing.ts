/**
 * Measures, on a real Redis (REDIS_URL), the per-item memory of the keys that dominate meterline's
 * footprint, using the key names of src/redis/keys.ts and values shaped like the pipeline's. The constants
 * of docs/redis-sizing.md come from this script: `node deploy/redis-sizing.ts [--ids 100000]`.
 * It writes only under its own prefix and deletes it afterwards.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { FIELD_SEPARATOR, Keys } from '../src/redis/keys.ts';
import { ID_HASH_BYTES } from '../src/state/id-hash.ts';

const { values } = parseArgs({ options: { ids: { type: 'string', default: '100000' } } });
const n = Number(values.ids);
if (!process.env.REDIS_URL) throw new Error('REDIS_URL: required (the Redis to measure on)');
const redis = new Redis(process.env.REDIS_URL);
const keys = new Keys(`sizing-${process.pid}`);
const part = keys.partition({ topic: 'usage-events', partition: 0 });
const hourMs = Date.UTC(2026, 11, 6, 9);
const usage = async (key: string) => Number(await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));

/** Bytes per id of an hour's dedupe log: one list entry per batch, 16 bytes per id (applyBatch.lua). */
async function perLoggedId(key: string, ids: number, idsPerBatch: number): Promise<number> {
  const entries: Buffer[] = [];
  for (let i = 0; i < ids; i += idsPerBatch)
    entries.push(randomBytes(ID_HASH_BYTES * Math.min(idsPerBatch, ids - i)));
  for (let i = 0; i < entries.length; i += 1000) await redis.rpush(key, ...entries.slice(i, i + 1000));
  return (await usage(key)) / ids;
}

try {
  const rows: [string, number][] = [];
  // Ids per batch and hour: a busy partition's fetch carries thousands; a quiet one a few.
  for (const perBatch of [10_000, 100, 10, 1]) {
    rows.push([
      `dedupe id, ${perBatch} per batch`,
      await perLoggedId(`${part.dedupeLog(hourMs)}:${perBatch}`, n, perBatch),
    ]);
  }
  const fields = Array.from(
    { length: 10_000 },
    (_, i) => `tenant-${String(i).padStart(6, '0')}${FIELD_SEPARATOR}api_calls`,
  );
  const agg = part.aggregates(hourMs);
  for (let i = 0; i < fields.length; i += 1000)
    await redis.hset(agg, ...fields.slice(i, i + 1000).flatMap((f) => [f, '123456789000']));
  rows.push(['open aggregate field', (await usage(agg)) / fields.length]);
  const fin = part.finalized(hourMs);
  const frozen = JSON.stringify({
    productCode: 'prod-abc123xyz',
    quantity: 1234,
    traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
  });
  for (let i = 0; i < fields.length; i += 1000)
    await redis.hset(fin, ...fields.slice(i, i + 1000).flatMap((f) => [f, frozen]));
  rows.push(['frozen record field (with traceparent)', (await usage(fin)) / fields.length]);
  const model = part.modelState();
  for (let i = 0; i < fields.length; i += 1000)
    await redis.hset(model, ...fields.slice(i, i + 1000).flatMap((f) => [f, '{"r":"0","h":"0"}']));
  rows.push(['model state field', (await usage(model)) / fields.length]);
  const ledgerValue = JSON.stringify({
    meteringRecordId: randomUUID(),
    quantity: 1234,
    acceptedAt: new Date(hourMs).toISOString(),
  });
  let ledgerBytes = 0;
  for (let i = 0; i < 1000; i++) {
    const key = keys.ledger(
      `prod-abc123xyz|tenant-${String(i).padStart(6, '0')}|api_calls|2026-12-06T09:00:00.000Z`,
    );
    await redis.set(key, ledgerValue, 'EX', 3600);
    ledgerBytes += await usage(key);
  }
  rows.push(['ledger entry (one key)', ledgerBytes / 1000]);
  const info = await redis.info('server');
  process.stdout.write(`redis ${/redis_version:(\S+)/.exec(info)?.[1]}, bytes per item (MEMORY USAGE):\n`);
  for (const [what, bytes] of rows) process.stdout.write(`  ${what.padEnd(40)} ${bytes.toFixed(1)}\n`);
} finally {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', keys.all(), 'COUNT', 1000);
    cursor = next;
    if (found.length) await redis.del(...found);
  } while (cursor !== '0');
  redis.disconnect();
}
