/**
 * The customer directory in Redis: tenants that registered through the registration URL, with the AWS
 * identity ResolveCustomer returned and the subscription status that lifecycle events keep current. One
 * entry per product subscription (`tenant␟productCode`): a buyer of two products has two entries, each with
 * its license and status, and a lifecycle event applies to the product it names only. A directory of the
 * earlier form (one entry per tenant) is migrated at start (`migrate`).
 * The customers file still works beside it; a tenant in the file wins, so an operator can pin one. File
 * tenants honour lifecycle events too: their AWS identities are indexed (`indexFileTenants`, at start) and
 * their status kept in a small store beside the directory (`fileStatuses`; no entry means subscribed).
 */
import type { CustomerMap } from '../config/customers.ts';
import { LINK_CODE } from '../metering/script-codes.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import * as scripts from '../redis/scripts.ts';
import {
  type ApplyOutcome,
  type CustomerRef,
  type DirectoryEntry,
  type FileTenantStatus,
  fileIndexFields,
  indexFields,
  type LinkOutcome,
  type ResolvedCustomer,
  refFields,
  type SubscriptionStatus,
  subscriptionField,
  tenantOfField,
  tenantView,
} from './directory-entries.ts';

// The entry shapes and helpers live in directory-entries.ts; most callers know them from here.
export {
  type ApplyOutcome,
  type CustomerRef,
  type DirectoryEntry,
  defaultTenant,
  type FileTenantStatus,
  isActive,
  isTenantId,
  type LinkOutcome,
  mappingOf,
  type ResolvedCustomer,
  SUBSCRIPTION_STATUSES,
  type SubscriptionStatus,
  subscriptionField,
} from './directory-entries.ts';

/**
 * Indexes the customers file's tenants by AWS identity when a file is configured (the processor and
 * registration both do at start, so either finds them; a role without the file leaves the index alone).
 */
export async function indexFileTenants(
  directory: CustomerDirectory,
  config: { customerMap: CustomerMap; plan: { products: readonly { productCode: string }[] } },
): Promise<void> {
  if (config.customerMap.size === 0) return;
  await directory.indexFileTenants(
    config.customerMap,
    config.plan.products.map((p) => p.productCode),
  );
}

export class CustomerDirectory {
  readonly #redis: ScriptedRedis;
  readonly #keys: Keys;
  #migrated: Promise<number> | undefined;

  constructor(redis: ScriptedRedis, keys: Keys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /**
   * Moves a directory of the earlier form (one entry per tenant) to one entry per product subscription, in
   * one script: every entry is kept, under its own product. Idempotent (a version key records it); run at
   * start by the processor, the worker and registration, and before the first read or write of an instance.
   * Returns how many entries it moved (-1: already done).
   */
  migrate(): Promise<number> {
    this.#migrated ??= scripts.migrateDirectory(this.#redis, this.#keys).catch((error: unknown) => {
      this.#migrated = undefined;
      throw error;
    });
    return this.#migrated;
  }

  /**
   * Stores a registration for the token's product only. A new subscription starts subscribed. A known one
   * keeps its status and event time: only lifecycle events subscribe and unsubscribe, so a still-valid token
   * posted again after unsubscribe-success or subscribe-fail does not bring the buyer back. Its identity is
   * refreshed, and `subscribedAt` kept. Returns that product's entry.
   */
  async register(defaultTenantId: string, customer: ResolvedCustomer, atMs: number): Promise<DirectoryEntry> {
    await this.migrate();
    // A subscription the seller linked to its own tenant id stays under that id when the buyer registers again.
    const linked = await this.#subscriptionOf(customer);
    const tenant = linked === undefined ? defaultTenantId : tenantOfField(linked);
    const field = subscriptionField(tenant, customer.productCode);
    const existing = (await this.getSubscriptions([{ tenant, productCode: customer.productCode }])).get(
      field,
    );
    if (existing) {
      // Same event time: the script takes it (not older), and a lifecycle event that lands meanwhile wins.
      await this.#apply(field, { ...customer }, existing.eventMs, false, indexFields(customer));
    } else {
      const patch: Omit<DirectoryEntry, 'eventMs'> = {
        tenant,
        ...customer,
        status: 'subscribed',
        subscribedAt: new Date(atMs).toISOString(),
      };
      await this.#apply(field, patch, atMs, true, indexFields(customer));
    }
    return (await this.getSubscriptions([{ tenant, productCode: customer.productCode }])).get(
      field,
    ) as DirectoryEntry;
  }

  /**
   * Applies a lifecycle status to the product subscription the event names (a license names one product;
   * an account or identifier is read with the event's product), a customers-file tenant's, or both when
   * both carry that identity. Unknown customers change nothing.
   */
  async applyStatus(
    ref: CustomerRef,
    status: SubscriptionStatus,
    eventMs: number,
  ): Promise<{ outcome: ApplyOutcome; tenant?: string }> {
    const field = await this.#subscriptionOf(ref);
    const fileTenant = await this.fileTenantOf(ref);
    if (field === undefined && fileTenant === undefined) return { outcome: 'unknown_customer' };
    const patch: Partial<DirectoryEntry> = { status };
    if (status === 'unsubscribe-pending' || status === 'unsubscribed') {
      patch.unsubscribedAt = new Date(eventMs).toISOString();
    }
    let applied = -1;
    if (field !== undefined) applied = await this.#apply(field, patch, eventMs, false, []);
    if (fileTenant !== undefined) {
      // Created at the first event: before it, a file tenant is subscribed.
      const file = await scripts.applyCustomerEvent(this.#redis, {
        entries: this.#keys.customerFileStatus(),
        index: this.#keys.customerFileIndex(),
        field: fileTenant,
        patch: { tenant: fileTenant, ...patch },
        eventMs,
        create: true,
        indexFields: [],
      });
      applied = Math.max(applied, file);
    }
    return {
      outcome: applied === 1 ? 'applied' : applied === 0 ? 'stale' : 'unknown_customer',
      tenant: field === undefined ? fileTenant : tenantOfField(field),
    };
  }

  /**
   * Rewrites the index of the customers file's tenants from the file (one transaction: an event never
   * sees it half written). Statuses already set are kept; a tenant that left the file is simply no longer
   * found, and its old status no longer read.
   */
  async indexFileTenants(customers: CustomerMap, productCodes: readonly string[]): Promise<void> {
    const fields = new Map<string, string>();
    for (const [tenant, m] of customers) {
      for (const field of fileIndexFields(m, productCodes)) fields.set(field, tenant);
    }
    const key = this.#keys.customerFileIndex();
    const tx = this.#redis.multi().del(key);
    if (fields.size) tx.hset(key, fields);
    const results = await tx.exec();
    const failed = results?.find(([error]) => error)?.[0];
    if (failed) throw failed;
  }

  /** The customers-file tenant an event names, if its identity is indexed. */
  async fileTenantOf(ref: CustomerRef): Promise<string | undefined> {
    for (const field of refFields(ref)) {
      const tenant = await this.#redis.hget(this.#keys.customerFileIndex(), field);
      if (tenant !== null) return tenant;
    }
    return undefined;
  }

  /** Every customers-file tenant a lifecycle event reached, with its status (HSCAN, as `all`). */
  async fileStatuses(): Promise<Map<string, FileTenantStatus>> {
    const out = new Map<string, FileTenantStatus>();
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#keys.customerFileStatus(), cursor, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) {
        out.set(flat[i - 1] as string, JSON.parse(flat[i] as string) as FileTenantStatus);
      }
      cursor = next;
    } while (cursor !== '0');
    return out;
  }

  /**
   * Links the seller's own tenant id to the product subscription an identity names (the claims of a
   * verified hand-off token): the entry moves to `tenant␟productCode`, with its index, in one script, so
   * usage under that id is billed with the subscription's license (and its zero records go under it).
   */
  async link(identity: ResolvedCustomer, tenant: string): Promise<LinkOutcome> {
    const from = await this.#subscriptionOf(identity);
    if (from === undefined) return { outcome: 'subscription_not_found' };
    const entry = await this.entryOf(identity);
    if (!entry) return { outcome: 'subscription_not_found' };
    const previous = tenantOfField(from);
    if (previous === tenant) return { outcome: 'already_linked', entry };
    const to = subscriptionField(tenant, entry.productCode);
    const moved = await scripts.linkTenant(this.#redis, this.#keys, {
      from,
      to,
      tenant,
      indexFields: indexFields(entry),
    });
    if (moved === LINK_CODE.tenantTaken) return { outcome: 'tenant_taken' };
    if (moved !== LINK_CODE.linked) return { outcome: 'subscription_not_found' };
    return { outcome: 'linked', entry: { ...entry, tenant }, previousTenant: previous };
  }

  /** The tenant of the subscription an event names (registered buyers only). */
  async tenantOf(ref: CustomerRef): Promise<string | undefined> {
    const field = await this.#subscriptionOf(ref);
    return field === undefined ? undefined : tenantOfField(field);
  }

  /** The product subscription an event names, if registered. */
  async entryOf(ref: CustomerRef): Promise<DirectoryEntry | undefined> {
    const field = await this.#subscriptionOf(ref);
    if (field === undefined) return undefined;
    const value = await this.#redis.hget(this.#keys.customerSubscriptions(), field);
    return value === null ? undefined : (JSON.parse(value) as DirectoryEntry);
  }

  /** Product subscriptions by `subscriptionField(tenant, productCode)` (the worker's lookup). */
  async getSubscriptions(
    wanted: readonly { tenant: string; productCode: string }[],
  ): Promise<Map<string, DirectoryEntry>> {
    await this.migrate();
    const fields = [...new Set(wanted.map((w) => subscriptionField(w.tenant, w.productCode)))];
    const out = new Map<string, DirectoryEntry>();
    // Chunks: one HMGET with a fleet's worth of fields would exceed the argument limit.
    for (let i = 0; i < fields.length; i += 5_000) {
      const chunk = fields.slice(i, i + 5_000);
      const values = await this.#redis.hmget(this.#keys.customerSubscriptions(), ...chunk);
      values.forEach((v, j) => {
        if (v !== null) out.set(chunk[j] as string, JSON.parse(v) as DirectoryEntry);
      });
    }
    return out;
  }

  /** Every product subscription (HSCAN, so a large directory does not block Redis). */
  async subscriptions(): Promise<DirectoryEntry[]> {
    await this.migrate();
    const out: DirectoryEntry[] = [];
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#keys.customerSubscriptions(), cursor, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) out.push(JSON.parse(flat[i] as string) as DirectoryEntry);
      cursor = next;
    } while (cursor !== '0');
    return out;
  }

  /**
   * One entry per tenant (its active subscription first, then the latest event), for readers still per
   * tenant: the CLI's listing and reconcile. It reads the whole directory; billing uses `getSubscriptions`.
   */
  async get(tenants: readonly string[]): Promise<Map<string, DirectoryEntry>> {
    const wanted = new Set(tenants);
    return tenantView((await this.subscriptions()).filter((e) => wanted.has(e.tenant)));
  }

  /** Every tenant, one entry each (see `get`). */
  async all(): Promise<DirectoryEntry[]> {
    return [...tenantView(await this.subscriptions()).values()];
  }

  async #subscriptionOf(ref: CustomerRef): Promise<string | undefined> {
    await this.migrate();
    for (const field of refFields(ref)) {
      const value = await this.#redis.hget(this.#keys.customerSubscriptionIndex(), field);
      if (value !== null) return value;
    }
    return undefined;
  }

  /**
   * Moves after every write to the directory (after it, so a reader that sees it moved reads the write):
   * the commit stage re-reads the directory only then, and sees an unsubscription at its next tick.
   */
  async changes(): Promise<string | null> {
    return await this.#redis.get(this.#keys.customerDirectoryChanges());
  }

  async #apply(
    field: string,
    patch: object,
    eventMs: number,
    create: boolean,
    fields: string[],
  ): Promise<number> {
    const applied = await scripts.applyCustomerEvent(this.#redis, {
      entries: this.#keys.customerSubscriptions(),
      index: this.#keys.customerSubscriptionIndex(),
      field,
      patch,
      eventMs,
      create,
      indexFields: fields,
    });
    if (applied === 1) await this.#redis.incr(this.#keys.customerDirectoryChanges());
    return applied;
  }
}
