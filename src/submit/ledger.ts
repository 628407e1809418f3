/** The idempotency ledger: a record AWS accepted is never sent again. Keyed by the deterministic record id. */

import type { Redis } from 'ioredis';
import type { Keys } from '../redis/keys.ts';

export interface LedgerEntry {
  meteringRecordId: string;
  quantity: number;
  acceptedAt: string;
}

const LEDGER_TTL_S = 45 * 24 * 3600;

export class Ledger {
  readonly redis: Redis;
  readonly keys: Keys;
  constructor(redis: Redis, keys: Keys) {
    this.redis = redis;
    this.keys = keys;
  }

  /** The entries of the given ids that are already accepted. */
  async accepted(recordIds: readonly string[]): Promise<Map<string, LedgerEntry>> {
    const out = new Map<string, LedgerEntry>();
    if (!recordIds.length) return out;
    // One GET per key in a pipeline: ledger keys hash to different slots on Redis Cluster.
    const pipeline = this.redis.pipeline();
    for (const id of recordIds) pipeline.get(this.keys.ledger(id));
    const res = (await pipeline.exec()) ?? [];
    res.forEach(([err, value], i) => {
      if (err) throw err;
      if (typeof value === 'string') out.set(recordIds[i] as string, JSON.parse(value) as LedgerEntry);
    });
    return out;
  }

  async record(entries: readonly { recordId: string; entry: LedgerEntry }[]): Promise<void> {
    if (!entries.length) return;
    const pipeline = this.redis.pipeline();
    for (const { recordId, entry } of entries) {
      pipeline.set(this.keys.ledger(recordId), JSON.stringify(entry), 'EX', LEDGER_TTL_S);
    }
    const res = (await pipeline.exec()) ?? [];
    for (const [err] of res) if (err) throw err;
  }
}
