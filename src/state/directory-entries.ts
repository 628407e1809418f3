/**
 * The customer directory's entries and how they are found: the shapes, the statuses, the index fields that
 * name an entry by AWS identity, and tenant ids and subscription fields (tenant␟productCode).
 */
import type { CustomerMapping } from '../config/customers.ts';
import { FIELD_SEPARATOR } from '../redis/keys.ts';

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

/** A customers-file tenant's status as lifecycle events set it. A file tenant without one is subscribed. */
export interface FileTenantStatus {
  tenant: string;
  status: SubscriptionStatus;
  /** ISO: when an unsubscribe was reported (pending or done). */
  unsubscribedAt?: string;
  /** The time of the latest event applied (older ones are ignored). */
  eventMs: number;
}

/** Whether a status still owes hourly records (zero records, the final hour): subscribed or ending. */
export function isActive(status: SubscriptionStatus): boolean {
  return status === 'subscribed' || status === 'unsubscribe-pending';
}

/** How a lifecycle event names the customer: any of its AWS ids (the account and identifier need the product). */
export interface CustomerRef {
  licenseArn?: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  productCode?: string;
}

/** Index fields for an identity; a lifecycle event may name any of them. */
export function indexFields(c: ResolvedCustomer): string[] {
  const fields: string[] = [];
  if (c.licenseArn) fields.push(`license:${c.licenseArn}`);
  if (c.customerAwsAccountId) fields.push(`account:${c.productCode}:${c.customerAwsAccountId}`);
  if (c.customerIdentifier) fields.push(`identifier:${c.productCode}:${c.customerIdentifier}`);
  return fields;
}

/**
 * The index fields of a customers-file tenant. Its mapping names no product (the legacy form may): it is
 * billed under each product of the plan, so an event naming any of them finds it.
 */
export function fileIndexFields(m: CustomerMapping, productCodes: readonly string[]): string[] {
  const products = 'productCode' in m && m.productCode ? [m.productCode] : productCodes;
  const fields = products.flatMap((productCode) =>
    indexFields(
      'customerAwsAccountId' in m
        ? { productCode, customerAwsAccountId: m.customerAwsAccountId, licenseArn: m.licenseArn }
        : { productCode, customerIdentifier: m.customerIdentifier },
    ),
  );
  return [...new Set(fields)];
}

export function refFields(ref: CustomerRef): string[] {
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

/** What linking a seller's tenant id did. */
export type LinkOutcome =
  | { outcome: 'linked'; entry: DirectoryEntry; previousTenant: string }
  | { outcome: 'already_linked'; entry: DirectoryEntry }
  | { outcome: 'subscription_not_found' }
  | { outcome: 'tenant_taken' };

/** A seller's tenant id, as usage events carry it: 1 to 128 characters, no control characters. */
export function isTenantId(tenant: unknown): tenant is string {
  return (
    typeof tenant === 'string' &&
    tenant.length >= 1 &&
    tenant.length <= 128 &&
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the check is for control characters
    !/[\u0000-\u001f\u007f]/.test(tenant)
  );
}

/** The directory field of one product subscription: `tenant␟productCode`. */
export function subscriptionField(tenant: string, productCode: string): string {
  return `${tenant}${FIELD_SEPARATOR}${productCode}`;
}

/** The tenant a subscription field names (tenant ids never hold the separator: it is a control character). */
export function tenantOfField(field: string): string {
  const i = field.lastIndexOf(FIELD_SEPARATOR);
  return i < 0 ? field : field.slice(0, i);
}

/**
 * A tenant's one-entry view of its subscriptions, for readers that are still per tenant (the CLI, reconcile):
 * an active subscription over an ended one, then the latest event.
 */
export function tenantView(entries: readonly DirectoryEntry[]): Map<string, DirectoryEntry> {
  const out = new Map<string, DirectoryEntry>();
  for (const e of entries) {
    const seen = out.get(e.tenant);
    const better =
      !seen ||
      (isActive(e.status) && !isActive(seen.status)) ||
      (isActive(e.status) === isActive(seen.status) && e.eventMs > seen.eventMs);
    if (better) out.set(e.tenant, e);
  }
  return out;
}
