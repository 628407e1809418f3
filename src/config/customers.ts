/**
 * The customers file maps the seller's tenant ids (the `customer` field of events) to AWS identities.
 * A tenant uses either the 2026 form (account id + license ARN) or the legacy CustomerIdentifier form,
 * never both, so a record can never mix them. A tenant on a contract-with-overage dimension carries its
 * contract: the period and the entitlement per dimension. It overrides what GetEntitlements returned
 * (src/subscribe/entitlements.ts) for that tenant.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { issueLines, readStructuredFile } from './load-file.ts';

export const ContractSchema = z
  .object({
    start: z.iso
      .datetime({ offset: true })
      .describe('start of the first contract period, e.g. 2026-01-01T00:00:00Z; periods repeat from it'),
    period: z.enum(['month', 'year']).default('month').describe('length of one contract period'),
    entitlements: z
      .record(z.string().min(1).max(255), z.number().nonnegative())
      .describe('dimension → quantity included in each period, in billed units'),
  })
  .strict();

export type Contract = z.infer<typeof ContractSchema>;

/**
 * A contract as the commit stage bills with it: the customers file's, or one made from the entitlements
 * GetEntitlements returned (src/subscribe/entitlements.ts), which may expire per dimension.
 */
export interface ContractTerms extends Contract {
  /** Dimension → when its entitlement stops counting (ms, AWS's ExpirationDate): hours from then on have none. */
  expiresAtMs?: Record<string, number>;
}

const SubscribedAt = z.iso
  .datetime({ offset: true })
  .optional()
  .describe('when the subscription started: hourly zero records begin at its hour');

const AccountForm = z
  .object({
    customerAwsAccountId: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account id'),
    licenseArn: z.string().regex(/^arn:aws[a-z-]*:license-manager:/, 'must be a License Manager ARN'),
    contract: ContractSchema.optional(),
    subscribedAt: SubscribedAt,
  })
  .strict();

const LegacyForm = z
  .object({
    customerIdentifier: z.string().min(1).max(255),
    productCode: z.string().min(1).max(255).optional(),
    contract: ContractSchema.optional(),
    subscribedAt: SubscribedAt,
  })
  .strict();

export const CustomerMappingSchema = z.union([AccountForm, LegacyForm], {
  error: 'use either {customerAwsAccountId, licenseArn} or {customerIdentifier}, not a mix',
});

/** The file's shape, for its published JSON Schema; parsing goes through `parseCustomers`. */
export const CustomersSchema = z.record(z.string().min(1).max(128), CustomerMappingSchema);

export type CustomerMapping = z.infer<typeof CustomerMappingSchema>;
/** Tenant → AWS identity. Tenant ids are outside data: `__proto__` or `constructor` is a tenant like any other. */
export type CustomerMap = ReadonlyMap<string, CustomerMapping>;
/**
 * The same as a null-prototype object, for code that still indexes it (the commit stage's subscriber and
 * contract lookups): no tenant name can reach Object.prototype. New code reads the CustomerMap.
 */
export type Customers = Readonly<Record<string, CustomerMapping>>;

const Tenant = z.string().min(1).max(128);
const EntitlementDimension = z.string().min(1).max(255);
const EntitlementQuantity = z.number().nonnegative();

export function awsCustomerId(mapping: CustomerMapping): string {
  return 'customerAwsAccountId' in mapping ? mapping.customerAwsAccountId : mapping.customerIdentifier;
}

/**
 * Reads the customers file. JSON.parse and the YAML parser keep a `__proto__` key as an own key, but
 * zod's record skips it (unvalidated) and a plain object would answer `constructor` for any tenant: so
 * each own key is checked here and the result is a Map.
 */
export function parseCustomers(raw: unknown, source = 'customers file'): CustomerMap {
  if (!isDictionary(raw)) throw new ConfigError(source, ['(root): expected an object of tenant → mapping']);
  const issues: string[] = [];
  const out = new Map<string, CustomerMapping>();
  for (const [tenant, value] of Object.entries(raw)) {
    const at = (path: readonly PropertyKey[]) => (i: { path: readonly PropertyKey[]; message: string }) => ({
      ...i,
      path: [...path, ...i.path],
    });
    const key = Tenant.safeParse(tenant);
    if (!key.success) issues.push(...issueLines(key.error.issues.map(at([tenant]))));
    const parsed = CustomerMappingSchema.safeParse(value);
    if (!parsed.success) {
      issues.push(...issueLines(parsed.error.issues.map(at([tenant]))));
      continue;
    }
    const mapping = parsed.data;
    const rawEntitlements = (value as { contract?: { entitlements?: unknown } }).contract?.entitlements;
    if (mapping.contract && isDictionary(rawEntitlements)) {
      const entitlements = dictionary<number>();
      for (const [dimension, quantity] of Object.entries(rawEntitlements)) {
        const path = [tenant, 'contract', 'entitlements', dimension];
        const d = EntitlementDimension.safeParse(dimension);
        const q = EntitlementQuantity.safeParse(quantity);
        if (!d.success) issues.push(...issueLines(d.error.issues.map(at(path))));
        if (!q.success) issues.push(...issueLines(q.error.issues.map(at(path))));
        if (d.success && q.success) entitlements[dimension] = q.data;
      }
      mapping.contract = { ...mapping.contract, entitlements };
    }
    out.set(tenant, mapping);
  }
  if (issues.length) throw new ConfigError(source, issues);
  return out;
}

export function loadCustomers(path: string): CustomerMap {
  return parseCustomers(
    readStructuredFile(path, `customers file (METERLINE_CUSTOMERS=${path})`),
    `customers file ${path}`,
  );
}

/** The CustomerMap as a null-prototype object (see `Customers`). */
export function customersObject(customers: CustomerMap): Customers {
  const out = dictionary<CustomerMapping>();
  for (const [tenant, mapping] of customers) out[tenant] = mapping;
  return Object.freeze(out);
}

function isDictionary(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object without a prototype: a `__proto__` key is an ordinary own key, and nothing is inherited. */
function dictionary<V>(): Record<string, V> {
  return Object.create(null) as Record<string, V>;
}
