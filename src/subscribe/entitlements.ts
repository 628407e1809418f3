/**
 * Contract entitlements from AWS: GetEntitlements (AWS Marketplace Entitlement Service) for a registered
 * buyer, stored per tenant and product in Redis, and turned into the contract the contract-with-overage
 * model bills against (a contract in the customers file still wins).
 *
 * Fetched on registration, on `entitlement-updated` (SNS) and `License Updated` / `Purchase Agreement
 * Created` (EventBridge) events, and on a schedule. Only the plan's products that have a `contract`
 * dimension are asked about. A fetch that fails (throttling and 5xx are retried with the project's
 * backoff first) writes nothing: the entitlements stored before stay in force.
 *
 * How an answer maps onto a contract (see README, "The metering plan"):
 * - `Value.IntegerValue` or `Value.DoubleValue` is the units included per contract period, in billed
 *   units of the dimension; a boolean or string value is not a quantity and is skipped (logged).
 * - The period: GetEntitlements has no period or start (its fields are ProductCode, Dimension,
 *   CustomerIdentifier / CustomerAWSAccountId, LicenseArn, Value, ExpirationDate), so periods are calendar
 *   months repeating from the subscription's start (the directory's `subscribedAt`).
 * - `ExpirationDate` is the contract's end (renewal or cancellation): the entitlement counts for the hours
 *   that begin before it; from then on that dimension has none and its usage is overage, in periods
 *   repeating from the expiration (a renewal moves the date, and the next fetch brings it back).
 */
import {
  type Entitlement,
  GetEntitlementsCommand,
  type GetEntitlementsCommandInput,
  type MarketplaceEntitlementServiceClient,
} from '@aws-sdk/client-marketplace-entitlement-service';
import type { ContractTerms, CustomerMap } from '../config/customers.ts';
import type { Plan } from '../config/plan.ts';
import { MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { classifyAwsError } from '../metering/aws-errors.ts';
import type { BackoffOptions } from '../metering/backoff.ts';
import { retry } from '../metering/retry.ts';
import { metrics } from '../observability/metrics.ts';
import type { CustomerDirectory, CustomerRef, DirectoryEntry } from '../state/customer-directory.ts';
import type { EntitlementStore, StoredEntitlement, TenantEntitlements } from '../state/entitlement-store.ts';
import type { SharedRateLimiter } from '../state/rate-limiter.ts';

/** Who to ask AWS about: the tenant, the product, and one of the two customer ids. */
export interface EntitlementSubject {
  tenant: string;
  productCode: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  subscribedAt?: string;
}

export type FetchTrigger = 'registration' | 'event' | 'schedule';

/** Attempts per page: throttling and 5xx are retried this often before the fetch fails. */
export const ENTITLEMENT_ATTEMPTS = 6;
export const ENTITLEMENT_BACKOFF: BackoffOptions = { baseMs: 200, maxMs: 5_000 };
/** A loop guard: no customer has this many pages of entitlements for one product. */
const MAX_PAGES = 100;
/** Periods of an AWS entitlement without a known subscription start: calendar months. */
const CALENDAR_MONTHS = '1970-01-01T00:00:00.000Z';

/**
 * Every entitlement AWS holds for one customer of one product, all pages. The customer filter is
 * CUSTOMER_AWS_ACCOUNT_ID, or CUSTOMER_IDENTIFIER for a legacy buyer (the API takes one, never both).
 */
export async function getEntitlements(
  client: MarketplaceEntitlementServiceClient,
  subject: EntitlementSubject,
  options: {
    attempts?: number;
    backoff?: BackoffOptions;
    rateLimiter?: Pick<SharedRateLimiter, 'acquire' | 'throttled'>;
    sleep?: (ms: number) => Promise<void>;
  } = {},
): Promise<Entitlement[]> {
  const filter: GetEntitlementsCommandInput['Filter'] = subject.customerAwsAccountId
    ? { CUSTOMER_AWS_ACCOUNT_ID: [subject.customerAwsAccountId] }
    : subject.customerIdentifier
      ? { CUSTOMER_IDENTIFIER: [subject.customerIdentifier] }
      : undefined;
  if (!filter) {
    throw new MeterlineError(
      'invalid_request',
      `tenant ${subject.tenant} has no AWS customer id to ask about`,
    );
  }
  const attempts = options.attempts ?? ENTITLEMENT_ATTEMPTS;
  const out: Entitlement[] = [];
  const tokens = new Set<string>();
  let next: string | undefined;
  for (let page = 0; ; page++) {
    if (page >= MAX_PAGES) {
      throw new MeterlineError('aws_error', `GetEntitlements gave more than ${MAX_PAGES} pages`, {
        retriable: true,
      });
    }
    const input: GetEntitlementsCommandInput = {
      ProductCode: subject.productCode,
      Filter: filter,
      ...(next ? { NextToken: next } : {}),
    };
    const answer = await retry(
      async () => {
        await options.rateLimiter?.acquire();
        try {
          return await client.send(new GetEntitlementsCommand(input));
        } catch (error) {
          const failure = classifyAwsError(error);
          if (failure.code === 'aws_throttled') await options.rateLimiter?.throttled();
          throw failure;
        }
      },
      {
        attempts,
        backoff: options.backoff ?? ENTITLEMENT_BACKOFF,
        ...(options.sleep ? { sleep: options.sleep } : {}),
      },
    );
    out.push(...(answer.Entitlements ?? []));
    next = answer.NextToken || undefined;
    // An empty page may still carry a NextToken (the API says so): only its absence ends the list.
    if (next === undefined) return out;
    if (tokens.has(next)) {
      throw new MeterlineError('aws_error', 'GetEntitlements repeated a NextToken', { retriable: true });
    }
    tokens.add(next);
  }
}

/**
 * The stored form of an answer: numeric values by dimension. Two entries for one dimension (should AWS
 * send them) keep the one valid longest. Returns the dimensions skipped for a non-numeric value.
 */
export function toStored(entitlements: readonly Entitlement[]): {
  dimensions: Record<string, StoredEntitlement>;
  skipped: string[];
} {
  const dimensions: Record<string, StoredEntitlement> = Object.create(null);
  const skipped: string[] = [];
  for (const e of entitlements) {
    if (!e.Dimension) continue;
    const value = e.Value?.IntegerValue ?? e.Value?.DoubleValue;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      skipped.push(e.Dimension);
      continue;
    }
    const entry: StoredEntitlement = { value };
    if (e.ExpirationDate) entry.expiresAt = new Date(e.ExpirationDate).toISOString();
    const seen = dimensions[e.Dimension];
    if (seen && validUntil(seen) >= validUntil(entry)) continue;
    dimensions[e.Dimension] = entry;
  }
  return { dimensions, skipped };
}

function validUntil(e: StoredEntitlement): number {
  return e.expiresAt === undefined ? Number.POSITIVE_INFINITY : Date.parse(e.expiresAt);
}

/** Tenant → contract, from stored entitlements (a tenant's products merged: dimension names are unique in a plan). */
export function contractsFromEntitlements(rows: readonly TenantEntitlements[]): Map<string, ContractTerms> {
  const out = new Map<string, ContractTerms>();
  for (const row of rows) {
    const c: ContractTerms = out.get(row.tenant) ?? {
      start: row.periodStart ?? CALENDAR_MONTHS,
      period: 'month',
      entitlements: Object.create(null) as Record<string, number>,
    };
    for (const [dimension, e] of Object.entries(row.dimensions)) {
      c.entitlements[dimension] = e.value;
      if (e.expiresAt !== undefined) {
        c.expiresAtMs ??= Object.create(null) as Record<string, number>;
        c.expiresAtMs[dimension] = Date.parse(e.expiresAt);
      }
    }
    out.set(row.tenant, c);
  }
  return out;
}

export interface EntitlementSyncOptions {
  client: MarketplaceEntitlementServiceClient;
  store: EntitlementStore;
  directory: CustomerDirectory;
  plan: Plan;
  /** The customers file: its tenants without a contract of their own are refreshed on the schedule too. */
  customers: CustomerMap;
  logger: Logger;
  /** GetEntitlements' share of the AWS quota (per account and API), shared with other replicas. */
  rateLimiter?: Pick<SharedRateLimiter, 'acquire' | 'throttled'>;
  /** One replica runs each scheduled round: `true` when this one may (a Redis lock). Absent: always. */
  claimRound?: (intervalMs: number) => Promise<boolean>;
  backoff?: BackoffOptions;
  attempts?: number;
  now?: () => number;
}

/** Keeps the stored entitlements current: on registration, on lifecycle events and on a schedule. */
export class EntitlementSync {
  readonly #o: EntitlementSyncOptions;
  /** Products with a contract dimension: the only ones worth a GetEntitlements call. */
  readonly #products: ReadonlySet<string>;
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<unknown> | undefined;

  constructor(options: EntitlementSyncOptions) {
    this.#o = options;
    this.#products = new Set(
      [...options.plan.dimensions.values()].filter((d) => d.model === 'contract').map((d) => d.productCode),
    );
  }

  /** Whether any product of the plan bills a contract (otherwise nothing is ever fetched). */
  get active(): boolean {
    return this.#products.size > 0;
  }

  /**
   * Fetches and stores one subject's entitlements. Undefined when its product has no contract dimension;
   * throws (storing nothing) when AWS could not be asked.
   */
  async refresh(subject: EntitlementSubject, trigger: FetchTrigger): Promise<TenantEntitlements | undefined> {
    if (!this.#products.has(subject.productCode)) return undefined;
    let answer: Entitlement[];
    try {
      answer = await getEntitlements(this.#o.client, subject, {
        ...(this.#o.rateLimiter ? { rateLimiter: this.#o.rateLimiter } : {}),
        ...(this.#o.backoff ? { backoff: this.#o.backoff } : {}),
        ...(this.#o.attempts ? { attempts: this.#o.attempts } : {}),
      });
    } catch (error) {
      metrics.entitlementFetches.inc({ trigger, outcome: 'failed' });
      this.#o.logger.warn(
        { err: error, tenant: subject.tenant, productCode: subject.productCode, trigger },
        'GetEntitlements failed: the entitlements stored before stay in force',
      );
      throw error;
    }
    const { dimensions, skipped } = toStored(answer);
    if (skipped.length) {
      this.#o.logger.warn(
        { tenant: subject.tenant, productCode: subject.productCode, dimensions: skipped },
        'entitlements without a numeric value are not contract quantities: skipped',
      );
    }
    const row: TenantEntitlements = {
      tenant: subject.tenant,
      productCode: subject.productCode,
      fetchedAt: new Date((this.#o.now ?? Date.now)()).toISOString(),
      ...(subject.subscribedAt ? { periodStart: subject.subscribedAt } : {}),
      dimensions,
    };
    await this.#o.store.put(row);
    metrics.entitlementFetches.inc({ trigger, outcome: 'stored' });
    this.#o.logger.info(
      { tenant: subject.tenant, productCode: subject.productCode, trigger, dimensions },
      'entitlements stored',
    );
    return row;
  }

  /** A registered buyer's entitlements (after registration, or an event naming it). */
  refreshEntry(entry: DirectoryEntry, trigger: FetchTrigger): Promise<TenantEntitlements | undefined> {
    return this.refresh(subjectOf(entry), trigger);
  }

  /** The entitlements of the buyer an event names; `unknown_customer` when it never registered. */
  async refreshRef(ref: CustomerRef): Promise<'refreshed' | 'not_contract' | 'unknown_customer'> {
    const entry = await this.#o.directory.entryOf(ref);
    if (!entry) return 'unknown_customer';
    return (await this.refreshEntry(entry, 'event')) ? 'refreshed' : 'not_contract';
  }

  /**
   * Everyone billed on a contract dimension without a contract in the customers file: registered buyers
   * whose agreement stands (or is ending), and file tenants with an AWS id but no `contract`.
   */
  async subjects(): Promise<EntitlementSubject[]> {
    const out: EntitlementSubject[] = [];
    for (const entry of await this.#o.directory.subscriptions()) {
      if (this.#o.customers.has(entry.tenant)) continue;
      if (entry.status !== 'subscribed' && entry.status !== 'unsubscribe-pending') continue;
      if (this.#products.has(entry.productCode)) out.push(subjectOf(entry));
    }
    for (const [tenant, m] of this.#o.customers) {
      if (m.contract) continue;
      const ids =
        'customerAwsAccountId' in m
          ? { customerAwsAccountId: m.customerAwsAccountId }
          : { customerIdentifier: m.customerIdentifier };
      const products =
        'productCode' in m && m.productCode
          ? [m.productCode].filter((p) => this.#products.has(p))
          : this.#products;
      for (const productCode of products) {
        out.push({
          tenant,
          productCode,
          ...ids,
          ...(m.subscribedAt ? { subscribedAt: m.subscribedAt } : {}),
        });
      }
    }
    return out;
  }

  /** One scheduled round: every subject, one at a time (the quota is shared); failures keep what was stored. */
  async refreshAll(): Promise<{ stored: number; failed: number }> {
    let stored = 0;
    let failed = 0;
    for (const subject of await this.subjects()) {
      try {
        if (await this.refresh(subject, 'schedule')) stored += 1;
      } catch {
        failed += 1;
      }
    }
    return { stored, failed };
  }

  /** Runs a round now and every `intervalMs` (one replica per round, with `claimRound`). */
  start(intervalMs: number): void {
    if (!this.active || this.#timer) return;
    const tick = () => {
      if (this.#round) return;
      this.#round = (async () => {
        if (this.#o.claimRound && !(await this.#o.claimRound(intervalMs))) return;
        const result = await this.refreshAll();
        this.#o.logger.info(result, 'scheduled entitlements refresh done');
      })()
        .catch((error: unknown) =>
          this.#o.logger.warn({ err: error }, 'scheduled entitlements refresh failed'),
        )
        .finally(() => {
          this.#round = undefined;
        });
    };
    this.#timer = setInterval(tick, intervalMs);
    this.#timer.unref();
    tick();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#round;
  }
}

function subjectOf(entry: DirectoryEntry): EntitlementSubject {
  return {
    tenant: entry.tenant,
    productCode: entry.productCode,
    ...(entry.customerAwsAccountId
      ? { customerAwsAccountId: entry.customerAwsAccountId }
      : entry.customerIdentifier
        ? { customerIdentifier: entry.customerIdentifier }
        : {}),
    subscribedAt: entry.subscribedAt,
  };
}
