/**
 * The customer directory in Redis: tenants that registered through the registration URL, with the AWS
 * identity ResolveCustomer returned and the subscription status that lifecycle events keep current.
 * The customers file still works beside it; a tenant in the file wins, so an operator can pin one.
 */
import type { CustomerMapping } from '../config/customers.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';

export const SUBSCRIPTION_STATUSES = [
  'subscribed',
  'subscribe-failed',
  'unsubscribe-pending',
  'unsubscribed',
] as const;
export type SubscriptionStatus = (typeof SUBSCRIPTION_STATUSES)[number];

/** What ResolveCustomer returned for a registration token. */
export interface ResolvedCustomer {
  productCode: string;
  customerAwsAccountId?: string;
  licenseArn?: string;
  customerIdentifier?: string;
}

export interface DirectoryEntry extends ResolvedCustomer {
  tenant: string;
  status: SubscriptionStatus;
  /** ISO: the first registration; hourly zero records start at its hour. */
  subscribedAt: string;
  /** ISO: when an unsubscribe was reported (pending or done). */
  unsubscribedAt?: string;
  /** The time of the latest event applied (older ones are ignored). */
  eventMs: number;
}

/** How a lifecycle event names the customer: any of its AWS ids (the account and identifier need the product). */
export interface CustomerRef {
  licenseArn?: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  productCode?: string;
}

/** Index fields for an identity; a lifecycle event may name any of them. */
function indexFields(c: ResolvedCustomer): string[] {
  const fields: string[] = [];
  if (c.licenseArn) fields.push(`license:${c.licenseArn}`);
  if (c.customerAwsAccountId) fields.push(`account:${c.productCode}:${c.customerAwsAccountId}`);
  if (c.customerIdentifier) fields.push(`identifier:${c.productCode}:${c.customerIdentifier}`);
  return fields;
}

function refFields(ref: CustomerRef): string[] {
  const fields: string[] = [];
  if (ref.licenseArn) fields.push(`license:${ref.licenseArn}`);
  if (ref.customerAwsAccountId && ref.productCode)
    fields.push(`account:${ref.productCode}:${ref.customerAwsAccountId}`);
  if (ref.customerIdentifier && ref.productCode)
    fields.push(`identifier:${ref.productCode}:${ref.customerIdentifier}`);
  return fields;
}

/** The default tenant id of a registered buyer: its AWS account id, or the legacy CustomerIdentifier. */
export function defaultTenant(c: ResolvedCustomer): string {
  return (c.customerAwsAccountId ?? c.customerIdentifier) as string;
}

/** The worker's view of an entry: the 2026 form when a license is known, else the legacy form. */
export function mappingOf(entry: DirectoryEntry): CustomerMapping | undefined {
  const base = { subscribedAt: entry.subscribedAt };
  if (entry.customerAwsAccountId && entry.licenseArn) {
    return { customerAwsAccountId: entry.customerAwsAccountId, licenseArn: entry.licenseArn, ...base };
  }
  if (entry.customerIdentifier) {
    return { customerIdentifier: entry.customerIdentifier, productCode: entry.productCode, ...base };
  }
  return undefined;
}

export type ApplyOutcome = 'applied' | 'stale' | 'unknown_customer';

export class CustomerDirectory {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /**
   * Stores a registration. A new tenant starts subscribed. A known one keeps its status and event time: only
   * lifecycle events subscribe and unsubscribe, so a still-valid token posted again after unsubscribe-success
   * or subscribe-fail does not bring the buyer back. Its identity is refreshed, and `subscribedAt` kept.
   */
  async register(tenant: string, customer: ResolvedCustomer, atMs: number): Promise<DirectoryEntry> {
    const existing = (await this.get([tenant])).get(tenant);
    if (existing) {
      // Same event time: the script takes it (not older), and a lifecycle event that lands meanwhile wins.
      await this.#apply(tenant, { ...customer }, existing.eventMs, false, indexFields(customer));
    } else {
      const patch: Omit<DirectoryEntry, 'eventMs'> = {
        tenant,
        ...customer,
        status: 'subscribed',
        subscribedAt: new Date(atMs).toISOString(),
      };
      await this.#apply(tenant, patch, atMs, true, indexFields(customer));
    }
    return (await this.get([tenant])).get(tenant) as DirectoryEntry;
  }

  /** Applies a lifecycle status to the tenant the event names; unknown customers change nothing. */
  async applyStatus(
    ref: CustomerRef,
    status: SubscriptionStatus,
    eventMs: number,
  ): Promise<{ outcome: ApplyOutcome; tenant?: string }> {
    const tenant = await this.tenantOf(ref);
    if (tenant === undefined) return { outcome: 'unknown_customer' };
    const patch: Partial<DirectoryEntry> = { status };
    if (status === 'unsubscribe-pending' || status === 'unsubscribed') {
      patch.unsubscribedAt = new Date(eventMs).toISOString();
    }
    const applied = await this.#apply(tenant, patch, eventMs, false, []);
    return { outcome: applied === 1 ? 'applied' : applied === 0 ? 'stale' : 'unknown_customer', tenant };
  }

  async tenantOf(ref: CustomerRef): Promise<string | undefined> {
    for (const field of refFields(ref)) {
      const tenant = await this.#redis.hget(this.#keys.customerIndex(), field);
      if (tenant !== null) return tenant;
    }
    return undefined;
  }

  async get(tenants: readonly string[]): Promise<Map<string, DirectoryEntry>> {
    const out = new Map<string, DirectoryEntry>();
    // Chunks: one HMGET with a fleet's worth of fields would exceed the argument limit.
    for (let i = 0; i < tenants.length; i += 5_000) {
      const chunk = tenants.slice(i, i + 5_000);
      const values = await this.#redis.hmget(this.#keys.customerDirectory(), ...chunk);
      values.forEach((v, j) => {
        if (v !== null) out.set(chunk[j] as string, JSON.parse(v) as DirectoryEntry);
      });
    }
    return out;
  }

  /** Every entry (HSCAN, so a large directory does not block Redis). */
  async all(): Promise<DirectoryEntry[]> {
    const out: DirectoryEntry[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#keys.customerDirectory(), cursor, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) out.push(JSON.parse(flat[i] as string) as DirectoryEntry);
      cursor = next;
    } while (cursor !== '0');
    return out;
  }

  #apply(tenant: string, patch: object, eventMs: number, create: boolean, fields: string[]): Promise<number> {
    return this.#redis.applyCustomerEvent(
      2,
      this.#keys.customerDirectory(),
      this.#keys.customerIndex(),
      tenant,
      JSON.stringify(patch),
      eventMs,
      create ? 1 : 0,
      ...fields,
    );
  }
}
