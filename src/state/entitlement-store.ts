/**
 * Contract buyers' entitlements as GetEntitlements last answered them, kept in Redis for the commit stage
 * (contract models) and the registration side; and the lock that lets one replica run each refresh round.
 */
import type { ScriptedRedis } from '../redis/client.ts';
import { entitlementField, type Keys } from '../redis/keys.ts';

/** One dimension's entitlement as stored. */
export interface StoredEntitlement {
  /** Units included per contract period. */
  value: number;
  /** ISO: AWS's ExpirationDate; absent when AWS gave none. */
  expiresAt?: string;
}

/** What GetEntitlements last answered for one tenant and product. */
export interface TenantEntitlements {
  tenant: string;
  productCode: string;
  /** ISO: when AWS answered. */
  fetchedAt: string;
  /** ISO: contract periods repeat monthly from here (the subscription's start). */
  periodStart?: string;
  dimensions: Record<string, StoredEntitlement>;
}

/** Stored entitlements in Redis: one hash, a field per tenant and product, and a version bumped on every write. */
export class EntitlementStore {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  async put(row: TenantEntitlements): Promise<void> {
    // Both keys share the {customers} hash tag: one MULTI on Redis Cluster too.
    await this.#redis
      .multi()
      .hset(this.#keys.entitlements(), entitlementField(row.tenant, row.productCode), JSON.stringify(row))
      .incr(this.#keys.entitlementsVersion())
      .exec();
  }

  async get(tenant: string, productCode: string): Promise<TenantEntitlements | undefined> {
    const text = await this.#redis.hget(this.#keys.entitlements(), entitlementField(tenant, productCode));
    return text === null ? undefined : parseRow(text);
  }

  async all(): Promise<TenantEntitlements[]> {
    const out: TenantEntitlements[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#keys.entitlements(), cursor, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) out.push(parseRow(flat[i] as string));
      cursor = next;
    } while (cursor !== '0');
    return out;
  }

  /** Changes with every write; null before the first. */
  version(): Promise<string | null> {
    return this.#redis.get(this.#keys.entitlementsVersion());
  }
}

function parseRow(text: string): TenantEntitlements {
  const row = JSON.parse(text) as TenantEntitlements;
  // Dimension names come from AWS: a `__proto__` dimension stays an ordinary key.
  row.dimensions = Object.assign(Object.create(null) as Record<string, StoredEntitlement>, row.dimensions);
  return row;
}

/** A Redis lock per round: `SET NX PX` for a little less than the interval, so one replica runs it. */
export function redisRoundClaim(redis: ScriptedRedis, keys: Keys): (intervalMs: number) => Promise<boolean> {
  return async (intervalMs) =>
    (await redis.set(
      keys.entitlementsRefresh(),
      String(process.pid),
      'PX',
      Math.max(1, Math.floor(intervalMs * 0.9)),
      'NX',
    )) === 'OK';
}
