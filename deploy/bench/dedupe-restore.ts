/**
 * The dedupe restore benchmark (a phase of `npm run bench`, or on its own with
 * `node deploy/bench/dedupe-restore.ts [--ids N]`): how long a new owner of a partition takes to restore
 * its dedupe index when Redis retains N event ids for it (default 1,000,000). Goal: ≤ 2 s for 1M ids.
 *
 * Everything goes through the product's code: the ids are written by `WindowStore.applyBatch` (the batch
 * script, packed 16-byte hashes per hour) in batches of 12,500 over 3 hours, as the processor writes them;
 * then a fresh `WindowStore` claims the partition (a new fencing token) and `dedupe.ready` restores the
 * index, timed from call to resolve. The restored index must hold exactly N ids and refuse a known id as
 * a duplicate, so the figure cannot be that of an empty or partial restore.
 */
import { parseArgs } from 'node:util';
import { createRedis, type ScriptedRedis } from '../../src/redis/client.ts';
import { aggregateField, Keys } from '../../src/redis/keys.ts';
import { WindowStore } from '../../src/state/window-store.ts';
import type { HourGroup } from '../../src/state/window-types.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { deleteKeysUnder, type PhaseOptions } from './phase.ts';
import { fmt } from './report-format.ts';

export const RESTORE_GOAL_SECONDS = 2;
const BATCH_IDS = 12_500;
const HOURS = 3;
const CUSTOMERS = 1_000;
const DIMENSIONS = ['api_calls', 'jobs', 'egress_gb', 'compute_min', 'seats'];
// The pipeline's setting (src/app/pipeline.ts).
const TTL_MS = 48 * HOUR_MS;

export interface RestoreResult {
  ids: number;
  batches: number;
  hours: number;
  /** Writing the ids through the batch script (not the figure; for scale). */
  writeSeconds: number;
  /** The new claim (one MULTI), before the restore. */
  claimSeconds: number;
  /** `dedupe.ready` on the new token: from call to resolve. The figure. */
  restoreSeconds: number;
  idsPerSec: number;
  /** Ids in the restored index (must equal `ids`). */
  restoredIds: number;
  /** Whether a known id was refused as a duplicate after the restore. */
  knownIdRefused: boolean;
  /** MEMORY USAGE of the partition's dedupe logs, per id. */
  redisBytesPerId: number;
  /** RSS growth of this process across the restore. */
  rssDeltaMb: number;
}

const idOf = (n: number) => `r-${String(n).padStart(9, '0')}`;

/** One batch's ids, pre-aggregated per (customer, dimension) like the processor's batches. */
function batchGroups(first: number, count: number, hourMs: number): HourGroup[] {
  const aggs = new Map<string, HourGroup['aggregates'][number]>();
  for (let n = first; n < first + count; n++) {
    const field = aggregateField(`c${n % CUSTOMERS}`, DIMENSIONS[n % DIMENSIONS.length] as string);
    let a = aggs.get(field);
    if (!a) {
      a = { field, op: 's', ids: [], micros: [] };
      aggs.set(field, a);
    }
    a.ids.push(idOf(n));
    a.micros.push(1_000_000);
  }
  return [{ hourMs, targetMs: hourMs, aggregates: [...aggs.values()] }];
}

export async function runDedupeRestore(
  o: Omit<PhaseOptions, 'brokers'> & { ids: number },
): Promise<RestoreResult> {
  const say = o.say ?? (() => {});
  const prefix = `${o.runId}-restore`;
  const keys = new Keys(prefix);
  const p = { topic: `${prefix}-usage`, partition: 0 };
  const options = { dedupeTtlMs: TTL_MS, finalizedTtlMs: TTL_MS };
  const redis: ScriptedRedis = createRedis(o.redisUrl);
  try {
    const nowMs = Date.now();
    const firstHour = hourStart(nowMs) - HOURS * HOUR_MS;
    const writer = new WindowStore(redis, keys, options);
    const { token } = await writer.claim(p);
    const batches = Math.ceil(o.ids / BATCH_IDS);
    const w0 = performance.now();
    let after: string | undefined;
    for (let b = 0; b < batches; b++) {
      const first = b * BATCH_IDS;
      const count = Math.min(BATCH_IDS, o.ids - first);
      const hourMs = firstHour + Math.floor((b * HOURS) / batches) * HOUR_MS;
      const last = String(b);
      const res = await writer.applyBatch(p, token, {
        offsets: { after, last },
        groups: batchGroups(first, count, hourMs),
        maxEventTimeMs: hourMs,
        nowMs,
      });
      if (res.applied !== count) throw new Error(`batch ${b}: ${res.applied} of ${count} ids applied`);
      after = last;
    }
    const writeSeconds = (performance.now() - w0) / 1000;
    const k = keys.partition(p);
    let logBytes = 0;
    for (let h = 0; h < HOURS; h++)
      logBytes += Number(
        (await redis.call('MEMORY', 'USAGE', k.dedupeLog(firstHour + h * HOUR_MS), 'SAMPLES', '0')) ?? 0,
      );
    say(
      `  ${o.ids.toLocaleString('en-US')} ids written in ${batches} batches (${writeSeconds.toFixed(1)} s)`,
    );

    // A new owner: its own store (no index in memory), a new claim, then the restore its first batch runs.
    const owner = new WindowStore(redis, keys, options);
    const c0 = performance.now();
    const claim = await owner.claim(p);
    const c1 = performance.now();
    const rss0 = process.memoryUsage.rss();
    const index = await owner.dedupe.ready(p, claim.token, nowMs);
    const restoreSeconds = (performance.now() - c1) / 1000;
    const rssDeltaMb = (process.memoryUsage.rss() - rss0) / 1_048_576;

    // A known id (the last one written) and a new one: the index must refuse the first only.
    const known = o.ids - 1;
    const check = owner.dedupe.pack(
      index,
      [
        {
          hourMs: firstHour + (HOURS - 1) * HOUR_MS,
          targetMs: firstHour + (HOURS - 1) * HOUR_MS,
          aggregates: [
            {
              field: aggregateField('c0', 'jobs'),
              op: 's',
              ids: [idOf(known), 'never-written'],
              micros: [1, 1],
            },
          ],
        },
      ],
      nowMs,
    );
    // Not sent: the new id leaves the index again.
    check.failed();
    const result: RestoreResult = {
      ids: o.ids,
      batches,
      hours: HOURS,
      writeSeconds,
      claimSeconds: (c1 - c0) / 1000,
      restoreSeconds,
      idsPerSec: index.size / restoreSeconds,
      restoredIds: index.size,
      knownIdRefused: check.duplicates === 1,
      redisBytesPerId: logBytes / o.ids,
      rssDeltaMb,
    };
    if (result.restoredIds !== o.ids)
      throw new Error(`restored ${result.restoredIds} ids, ${o.ids} were written`);
    if (!result.knownIdRefused) throw new Error('a known id was not refused after the restore');
    return result;
  } finally {
    await deleteKeysUnder(redis, prefix);
    redis.disconnect();
  }
}

/** Its row in the bench's runs table: run, rate, seconds, CPU, notes. */
export function restoreRow(r: RestoreResult): string[] {
  return [
    `(f) dedupe restore, new claim of a partition with ${fmt(r.ids)} ids`,
    `${fmt(r.idsPerSec)} ids/s`,
    fmt(r.restoreSeconds, 2),
    '',
    `${fmt(r.restoredIds)} ids restored in ${fmt(r.restoreSeconds, 2)} s, a known id refused: ${r.knownIdRefused}; ` +
      `written by the batch script in ${r.batches} batches over ${r.hours} hours; ${fmt(r.redisBytesPerId, 1)} B/id in Redis`,
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { ids: { type: 'string', default: '1000000' } }, strict: true });
  const { ensureServices } = await import('../stack/index.ts');
  const { env } = await ensureServices(['redis']);
  const result = await runDedupeRestore({
    redisUrl: env.REDIS_URL as string,
    runId: `restore-${Date.now().toString(36)}`,
    ids: Number(values.ids),
    say: (l) => process.stdout.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
