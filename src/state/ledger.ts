/** The idempotency ledger: a record AWS accepted is never sent again. Keyed by the deterministic record id. */

import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import type { Keys } from '../redis/keys.ts';

export interface LedgerEntry {
  meteringRecordId: string;
  quantity: number;
  acceptedAt: string;
}

const LEDGER_TTL_S = 45 * 24 * 3600;

/**
 * Ledger keys hash to different slots. On a standalone Redis a batch shares one pipelined round trip; on a
 * Redis Cluster (where a pipeline must stay within one slot) it goes out as concurrent single commands, which
 * ioredis routes to each key's node.
 */
export class Ledger {
  readonly #redis: Redis | Cluster;
  readonly #keys: Keys;
  constructor(redis: Redis | Cluster, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** Every ledger entry under the prefix, by record id (SCAN; on a Redis Cluster, every master). */
  async all(): Promise<Map<string, { quantity: number; meteringRecordId: string }>> {
    const out = new Map<string, { quantity: number; meteringRecordId: string }>();
    const prefix = this.#keys.ledger('');
    const nodes =
      'nodes' in this.#redis && typeof this.#redis.nodes === 'function' && this.#redis.isCluster
        ? this.#redis.nodes('master')
        : [this.#redis];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (!found.length) continue;
        const values = await Promise.all(found.map((k) => node.get(k)));
        found.forEach((k, i) => {
          const v = values[i];
          if (typeof v !== 'string') return;
          const entry = JSON.parse(v) as LedgerEntry;
          out.set(k.slice(prefix.length), {
            quantity: entry.quantity,
            meteringRecordId: entry.meteringRecordId,
          });
        });
      } while (cursor !== '0');
    }
    return out;
  }

  /** The entries of the given ids that are already accepted. */
  async accepted(recordIds: readonly string[]): Promise<Map<string, LedgerEntry>> {
    const out = new Map<string, LedgerEntry>();
    if (!recordIds.length) return out;
    const keys = recordIds.map((id) => this.#keys.ledger(id));
    const redis = this.#redis;
    const values: unknown[] = isCluster(redis)
      ? await Promise.all(keys.map((key) => redis.get(key)))
      : await execAll(keys.reduce((p, key) => p.get(key), redis.pipeline()));
    values.forEach((value, i) => {
      if (typeof value === 'string') out.set(recordIds[i] as string, JSON.parse(value) as LedgerEntry);
    });
    return out;
  }

  /** Records accepted entries; `customer` and `hourMs` also move that customer's latest accepted hour. */
  async record(
    entries: readonly { recordId: string; entry: LedgerEntry; customer?: string; hourMs?: number }[],
  ): Promise<void> {
    if (!entries.length) return;
    await this.#recordEntries(entries);
    const latest = new Map<string, number>();
    for (const { customer, hourMs } of entries) {
      if (customer !== undefined && hourMs !== undefined && hourMs > (latest.get(customer) ?? -1))
        latest.set(customer, hourMs);
    }
    // GT: only ever moves forward, whichever worker writes last.
    if (latest.size)
      await this.#redis.zadd(this.#keys.lastAccepted(), 'GT', ...[...latest].flatMap(([c, h]) => [h, c]));
  }

  /** The latest accepted hour (ms) of each customer, newest first, at most `limit`. */
  async lastAccepted(limit: number): Promise<{ customer: string; hourMs: number }[]> {
    const flat = await this.#redis.zrange(
      this.#keys.lastAccepted(),
      '0',
      String(limit - 1),
      'REV',
      'WITHSCORES',
    );
    const out: { customer: string; hourMs: number }[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2)
      out.push({ customer: flat[i] as string, hourMs: Number(flat[i + 1]) });
    return out;
  }

  /** The latest accepted hour (ms) of the given customers (undefined: never). */
  async lastAcceptedOf(customers: readonly string[]): Promise<(number | undefined)[]> {
    if (!customers.length) return [];
    const scores = await this.#redis.zmscore(this.#keys.lastAccepted(), ...customers);
    return scores.map((s) => (s === null ? undefined : Number(s)));
  }

  async #recordEntries(entries: readonly { recordId: string; entry: LedgerEntry }[]): Promise<void> {
    const items = entries.map(({ recordId, entry }) => ({
      key: this.#keys.ledger(recordId),
      value: JSON.stringify(entry),
    }));
    const redis = this.#redis;
    if (isCluster(redis)) {
      await Promise.all(items.map(({ key, value }) => redis.set(key, value, 'EX', LEDGER_TTL_S)));
    } else {
      await execAll(
        items.reduce((p, { key, value }) => p.set(key, value, 'EX', LEDGER_TTL_S), redis.pipeline()),
      );
    }
  }
}

function isCluster(redis: Redis | Cluster): redis is Cluster {
  return redis.isCluster;
}

/** Runs a pipeline; rejects with the first command error. */
async function execAll(pipeline: ChainableCommander): Promise<unknown[]> {
  const res = (await pipeline.exec()) ?? [];
  return res.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
