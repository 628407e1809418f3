/**
 * The emulator's memory and AWS's metering rules, with no HTTP in sight, so every rule can be tested
 * with an injected clock. The server only decodes the wire and hands the JSON body to this class.
 *
 * Rules modelled (DESIGN.md "AWS Marketplace Metering: facts as of late 2026"):
 * - BatchMeterUsage: ≤ 25 records; one out-of-window record rejects the whole call; one record per
 *   (product or license, customer, dimension, hour), resent with the same quantity → the same
 *   MeteringRecordId, with another quantity → `DuplicateRecord` (the first one stands).
 * - Licenses: AWS knows the licenses it granted (a subscription's `licenseArn`, kept after the agreement
 *   ends). A record whose LicenseArn was granted to another customer, or is not the license of a customer
 *   AWS holds one for, rejects the whole call with InvalidLicenseException. A customer subscribed by id
 *   alone has no license on record here, so any LicenseArn not granted to someone else passes for it; a
 *   customer AWS has never heard of gets `CustomerNotSubscribed` ("the customer identifier is invalid").
 * - MeterUsage: one record per (caller, product, dimension, hour); `ClientToken` idempotency.
 * - The acceptance windows come from `metering/aws-window.ts`, the same rule the pipeline plans with.
 */
import { randomUUID } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import {
  DEFAULT_ACCEPTANCE_WINDOW_MS,
  isWithinAcceptanceWindow,
  type MeteringApi,
} from '../metering/aws-window.ts';
import { hourIso, hourStart } from '../time/hours.ts';
import { EmulatedEntitlements } from './entitlements.ts';
import { FaultInjector, type FaultSettings, type InjectedCounts, parseFaultUpdate } from './faults.ts';
import { RequestQuota } from './quota.ts';
import { ServiceError } from './service-error.ts';
import {
  type BatchMeterUsageInput,
  parseBatchMeterUsage,
  parseMeterUsage,
  type UsageAllocationInput,
  type UsageRecordInput,
} from './validate.ts';

export type CustomerType = 'account' | 'identifier' | 'caller';

/** A subscribed buyer. `licenseArn` / `productCode`, when known, must match what records carry. */
export interface CustomerSubscription {
  /** A CustomerAWSAccountId or a legacy CustomerIdentifier. */
  id: string;
  licenseArn?: string;
  productCode?: string;
}

export interface AcceptedRecord {
  api: MeteringApi;
  /** Absent for license-based (LicenseArn, no ProductCode) BatchMeterUsage records. */
  productCode?: string;
  /** The AWS id the record was metered for; for MeterUsage, the caller's SigV4 access key id. */
  customer: string;
  customerType: CustomerType;
  licenseArn?: string;
  dimension: string;
  /** The UTC hour the record counts in (ISO, `…:00:00Z`). */
  timestamp: string;
  quantity: number;
  meteringRecordId: string;
  /** ISO time (emulator clock) of first acceptance. */
  acceptedAt: string;
  usageAllocations?: UsageAllocationInput[];
}

export interface EmulatorSnapshot {
  records: AcceptedRecord[];
  /** How many DuplicateRecord results and DuplicateRequestExceptions were answered. */
  duplicates: number;
  /** Requests received per operation (including ones that failed). */
  calls: Record<string, number>;
  /** Error answers per AWS error type. */
  errors: Record<string, number>;
  /** Requests refused by the TPS quota, per operation (also counted in `errors.ThrottlingException`). */
  throttled: Record<string, number>;
  /** Rate-based faults injected (see `faults.ts`); faults made by `FaultHooks` are not counted here. */
  injected: InjectedCounts;
}

export type UsageRecordStatus = 'Success' | 'CustomerNotSubscribed' | 'DuplicateRecord';

export interface BatchMeterUsageOutput {
  Results: { UsageRecord: UsageRecordInput; MeteringRecordId?: string; Status: UsageRecordStatus }[];
  UnprocessedRecords: UsageRecordInput[];
}

/**
 * The scripted seam for fault injection (throttling, 5xx, timeouts, partial processing); rate-based
 * faults (`faults.ts`) sit beside it. Handlers consult both before doing real work, so a fault never
 * leaves half-applied state behind.
 */
export interface FaultHooks {
  /** Asked by the server before an operation runs; an action replaces the normal answer. */
  beforeOperation?(operation: string): FaultAction | undefined;
  /** Asked per BatchMeterUsage record that passed validation; `true` returns it as unprocessed. */
  leaveUnprocessed?(record: UsageRecordInput): boolean;
}

export type FaultAction =
  | { kind: 'error'; error: ServiceError }
  | { kind: 'delay'; ms: number }
  /** Destroy the socket without answering: the client sees a reset or its own timeout. */
  | { kind: 'hangUp' };

export interface EmulatorStateOptions {
  /** @defaultValue `Date.now` */
  now?: () => number;
  /** Subscribed buyers: ids (AWS account ids or legacy CustomerIdentifiers) or full subscriptions. */
  customers?: Iterable<string | CustomerSubscription>;
  /** Acceptance window per API. @defaultValue `DEFAULT_ACCEPTANCE_WINDOW_MS` (24 h / 6 h) */
  windowMs?: Partial<Record<MeteringApi, number>>;
  /** If set, any other product code is an InvalidProductCodeException. @defaultValue any code */
  productCodes?: readonly string[];
  /** If set, any other dimension is an InvalidUsageDimensionException. @defaultValue any dimension */
  dimensions?: readonly string[];
  /**
   * Hooks (kept by reference: a test may swap them between calls) and the initial rate-based faults.
   * Change the rates later with `configureFaults`, not on this object.
   */
  faults?: FaultHooks & Partial<FaultSettings>;
  /** Requests per second per operation, as AWS's quota; 0 = no quota. @defaultValue 0 */
  tps?: number;
  /** Monotonic ms for the TPS quota, apart from `now` so a frozen metering clock does not freeze it. */
  quotaClock?: () => number;
  /** @defaultValue `crypto.randomUUID` */
  newRecordId?: () => string;
  /** GetEntitlements' page when the request gives no MaxResults. @defaultValue DEFAULT_ENTITLEMENTS_PAGE */
  entitlementsPageSize?: number;
}

const MAX_TAGS = 5;
const TAG_PATTERN = /^[a-zA-Z0-9+ -=._:/@]+$/;

interface TokenEntry {
  fingerprint: string;
  meteringRecordId: string;
}

export class EmulatorState {
  readonly faults: FaultHooks;
  readonly quota: RequestQuota;
  readonly injector: FaultInjector;
  /** What GetEntitlements answers from; set through the admin API. Kept by `reset`, like subscriptions. */
  readonly entitlements: EmulatedEntitlements;
  readonly #now: () => number;
  readonly #windowMs: Record<MeteringApi, number>;
  readonly #productCodes: ReadonlySet<string> | undefined;
  readonly #dimensions: ReadonlySet<string> | undefined;
  readonly #newRecordId: () => string;
  readonly #customers = new Map<string, CustomerSubscription>();
  /**
   * Subscriptions that name their product, by `id|product`: a buyer of two products holds one each, with
   * its own license (AWS grants a license per product agreement).
   */
  readonly #byProduct = new Map<string, CustomerSubscription>();
  /** The product a license was granted for, when its subscription named it. */
  readonly #licenseProduct = new Map<string, string>();
  /** Every license granted, with the account it was granted to; an unsubscription does not erase it. */
  readonly #licenses = new Map<string, string>();
  /** Accounts by the licenses granted to them (the reverse of #licenses). */
  readonly #licensed = new Map<string, Set<string>>();
  /** Accepted records by dedupe key, in acceptance order. */
  readonly #records = new Map<string, AcceptedRecord>();
  /** MeterUsage ClientTokens, per caller. */
  readonly #tokens = new Map<string, TokenEntry>();
  /** Registration tokens the buyer's browser would carry to the seller's registration URL. */
  readonly #registrations = new Map<string, RegistrationGrant>();
  #duplicates = 0;
  // Keyed by names from the wire (X-Amz-Target): Maps, so no name can reach Object.prototype.
  readonly #calls = new Map<string, number>();
  readonly #errors = new Map<string, number>();
  readonly #throttled = new Map<string, number>();

  constructor(options: EmulatorStateOptions = {}) {
    const windowMs = { ...DEFAULT_ACCEPTANCE_WINDOW_MS, ...options.windowMs };
    const problems = Object.entries(windowMs)
      .filter(([, ms]) => !(Number.isFinite(ms) && ms > 0))
      .map(([api, ms]) => `windowMs.${api} must be a positive number of milliseconds (got ${ms})`);
    if (problems.length > 0) throw new RangeError(problems.join('; '));
    this.#windowMs = windowMs;
    this.#now = options.now ?? Date.now;
    this.#productCodes = options.productCodes && new Set(options.productCodes);
    this.#dimensions = options.dimensions && new Set(options.dimensions);
    this.#newRecordId = options.newRecordId ?? randomUUID;
    this.faults = options.faults ?? {};
    // Everything but the hooks is a rate setting, validated (unknown keys included) like the admin API's.
    const { beforeOperation, leaveUnprocessed, ...initialFaults } = options.faults ?? {};
    this.injector = new FaultInjector(initialFaults);
    this.quota = new RequestQuota(options.tps ?? 0, options.quotaClock);
    this.entitlements = new EmulatedEntitlements(options.entitlementsPageSize);
    this.subscribe(options.customers ?? []);
  }

  // ── customers ──────────────────────────────────────────────────────────────────────────────────

  subscribe(customers: Iterable<string | CustomerSubscription>): void {
    for (const c of customers) {
      const sub = typeof c === 'string' ? { id: c } : c;
      this.#customers.set(sub.id, sub);
      if (sub.productCode !== undefined) {
        this.#byProduct.set(`${sub.id}|${sub.productCode}`, sub);
        if (sub.licenseArn !== undefined) this.#licenseProduct.set(sub.licenseArn, sub.productCode);
      }
      if (sub.licenseArn !== undefined) {
        this.#licenses.set(sub.licenseArn, sub.id);
        const granted = this.#licensed.get(sub.id) ?? new Set<string>();
        this.#licensed.set(sub.id, granted.add(sub.licenseArn));
      }
    }
  }

  /** Ends the subscriptions of these buyers: every product's, or only `productCode`'s when given. */
  unsubscribe(ids: Iterable<string>, productCode?: string): void {
    for (const id of ids) {
      for (const [key, sub] of this.#byProduct) {
        if (sub.id === id && (productCode === undefined || sub.productCode === productCode))
          this.#byProduct.delete(key);
      }
      const current = this.#customers.get(id);
      if (productCode === undefined || current?.productCode === productCode) {
        this.#customers.delete(id);
        const other = [...this.#byProduct.values()].find((sub) => sub.id === id);
        if (other) this.#customers.set(id, other);
      }
    }
  }

  /** The licenses of a buyer's current subscriptions (every product), or undefined when none names one. */
  #currentLicenses(account: string): string[] | undefined {
    const sub = this.#customers.get(account);
    const licenses = new Set<string>();
    if (sub?.licenseArn !== undefined) licenses.add(sub.licenseArn);
    for (const s of this.#byProduct.values()) {
      if (s.id === account && s.licenseArn !== undefined) licenses.add(s.licenseArn);
    }
    return licenses.size ? [...licenses] : undefined;
  }

  customers(): CustomerSubscription[] {
    return [...this.#customers.values()];
  }

  // ── bookkeeping (the server reports every call and every error answer) ─────────────────────────

  noteCall(operation: string): void {
    count(this.#calls, operation);
  }

  noteError(type: string): void {
    count(this.#errors, type);
  }

  snapshot(): EmulatorSnapshot {
    return {
      records: [...this.#records.values()].map((r) => structuredClone(r)),
      duplicates: this.#duplicates,
      // Object.fromEntries defines own properties: a `__proto__` operation name stays a plain key.
      calls: Object.fromEntries(this.#calls),
      errors: Object.fromEntries(this.#errors),
      throttled: Object.fromEntries(this.#throttled),
      injected: this.injector.counts,
    };
  }

  /** Forgets records, tokens, counters and spent quota; subscriptions and fault settings stay. */
  reset(): void {
    this.#records.clear();
    this.#tokens.clear();
    this.#duplicates = 0;
    this.#calls.clear();
    this.#errors.clear();
    this.#throttled.clear();
    this.injector.resetCounts();
    this.quota.reset();
  }

  // ── quota and rate-based faults ────────────────────────────────────────────────────────────────

  /** Takes a quota token for `operation`; `false` (counted in `throttled`) means answer throttling. */
  admit(operation: string): boolean {
    if (this.quota.tryTake(operation)) return true;
    count(this.#throttled, operation);
    return false;
  }

  faultSettings(): FaultSettings & { tps: number } {
    return { ...this.injector.settings, tps: this.quota.tps };
  }

  /** Applies an untrusted partial update (admin API); throws a ConfigError listing every problem. */
  configureFaults(update: unknown): void {
    const { tps, ...faults } = parseFaultUpdate(update, this.injector.settings);
    this.injector.configure(faults);
    if (tps !== undefined) this.quota.tps = tps;
  }

  // ── BatchMeterUsage ────────────────────────────────────────────────────────────────────────────

  batchMeterUsage(body: unknown): BatchMeterUsageOutput {
    const input = parseBatchMeterUsage(body);
    for (const record of input.UsageRecords) this.#checkBatchRecord(input, record);
    // All-or-nothing: one stale record rejects the call before anything is recorded.
    const now = this.#now();
    for (const record of input.UsageRecords) {
      const ms = record.Timestamp * 1000;
      if (!isWithinAcceptanceWindow('BatchMeterUsage', ms, now, this.#windowMs.BatchMeterUsage)) {
        throw new ServiceError(
          'TimestampOutOfBoundsException',
          `Timestamp ${new Date(ms).toISOString()} of a record for dimension ${record.Dimension} is outside the ` +
            'allowed range; the batch was not processed',
        );
      }
    }

    const output: BatchMeterUsageOutput = { Results: [], UnprocessedRecords: [] };
    for (const record of input.UsageRecords) {
      if (this.faults.leaveUnprocessed?.(record) || this.injector.leaveUnprocessed()) {
        output.UnprocessedRecords.push(record);
        continue;
      }
      output.Results.push({ UsageRecord: record, ...this.#meterBatchRecord(input, record, now) });
    }
    return output;
  }

  /** Whole-call rejections: anything here fails the batch the way AWS's Invalid* exceptions do. */
  #checkBatchRecord(input: BatchMeterUsageInput, record: UsageRecordInput): void {
    const hasIdentifier = record.CustomerIdentifier !== undefined;
    const hasAccount = record.CustomerAWSAccountId !== undefined;
    if (hasIdentifier === hasAccount) {
      throw new ServiceError(
        'InvalidCustomerIdentifierException',
        'Each usage record must carry exactly one of CustomerIdentifier or CustomerAWSAccountId',
      );
    }
    if (hasAccount && record.LicenseArn === undefined) {
      throw new ServiceError('InvalidLicenseException', 'CustomerAWSAccountId requires a LicenseArn');
    }
    if (hasIdentifier && input.ProductCode === undefined) {
      throw new ServiceError(
        'InvalidProductCodeException',
        'ProductCode is required for CustomerIdentifier records',
      );
    }
    if (input.ProductCode !== undefined) this.#checkProductCode(input.ProductCode);
    this.#checkDimension(record.Dimension);
    checkAllocations(record.UsageAllocations, record.Quantity ?? 0);
    if (hasAccount)
      this.#checkLicense(record.CustomerAWSAccountId ?? '', record.LicenseArn ?? '', input.ProductCode);
  }

  /** InvalidLicenseException: "Ensure the LicenseArn is valid, matches the customer…" (AWS's model). */
  #checkLicense(account: string, licenseArn: string, productCode: string | undefined): void {
    const owner = this.#licenses.get(licenseArn);
    const sub = this.#customers.get(account);
    // The customer's current license for the product, or (agreement ended) any license it was ever granted.
    const forProduct =
      productCode === undefined ? undefined : this.#byProduct.get(`${account}|${productCode}`);
    const perProduct = [...this.#byProduct.values()].some((s) => s.id === account);
    const known = perProduct
      ? forProduct?.licenseArn !== undefined
        ? [forProduct.licenseArn]
        : this.#licensed.get(account)
      : sub
        ? this.#currentLicenses(account)
        : this.#licensed.get(account);
    // A license is granted for one product: another product's records cannot use it.
    const licensed = this.#licenseProduct.get(licenseArn);
    if (licensed !== undefined && productCode !== undefined && licensed !== productCode) {
      throw new ServiceError(
        'InvalidLicenseException',
        `LicenseArn ${licenseArn} is a license for product ${licensed}, not ${productCode}`,
      );
    }
    if ((owner !== undefined && owner !== account) || (known && ![...known].includes(licenseArn))) {
      throw new ServiceError(
        'InvalidLicenseException',
        owner === undefined
          ? `LicenseArn ${licenseArn} is not a license granted to customer ${account}`
          : `LicenseArn ${licenseArn} does not match customer ${account}`,
      );
    }
  }

  #meterBatchRecord(
    input: BatchMeterUsageInput,
    record: UsageRecordInput,
    now: number,
  ): { MeteringRecordId?: string; Status: UsageRecordStatus } {
    const customerType: CustomerType = record.CustomerAWSAccountId !== undefined ? 'account' : 'identifier';
    const customer = record.CustomerAWSAccountId ?? record.CustomerIdentifier ?? '';
    if (!this.#isSubscribed(customer, input.ProductCode)) return { Status: 'CustomerNotSubscribed' };

    const hour = hourStart(record.Timestamp * 1000);
    const quantity = record.Quantity ?? 0;
    // ProductCode and LicenseArn are separate scopes: AWS bills both if a seller sends both (see model docs).
    const key = JSON.stringify([
      'BatchMeterUsage',
      input.ProductCode ?? null,
      record.LicenseArn ?? null,
      customerType,
      customer,
      record.Dimension,
      hour,
    ]);
    const existing = this.#records.get(key);
    if (existing) {
      if (existing.quantity === quantity)
        return { MeteringRecordId: existing.meteringRecordId, Status: 'Success' };
      this.#duplicates += 1;
      return { Status: 'DuplicateRecord' };
    }
    const accepted = this.#accept(
      'BatchMeterUsage',
      {
        productCode: input.ProductCode,
        customer,
        customerType,
        licenseArn: record.LicenseArn,
        dimension: record.Dimension,
        quantity,
        usageAllocations: record.UsageAllocations,
      },
      hour,
      now,
    );
    this.#records.set(key, accepted);
    return { MeteringRecordId: accepted.meteringRecordId, Status: 'Success' };
  }

  #isSubscribed(customer: string, productCode: string | undefined): boolean {
    const sub = this.#customers.get(customer);
    if (!sub) return false;
    if (productCode !== undefined && this.#byProduct.has(`${customer}|${productCode}`)) return true;
    return sub.productCode === undefined || productCode === undefined || sub.productCode === productCode;
  }

  // ── ResolveCustomer ────────────────────────────────────────────────────────────────────────────

  /**
   * Mints the token AWS Marketplace would hand the buyer's browser after a purchase. The buyer is
   * subscribed at once (AWS sends subscribe-success around the same time).
   */
  issueRegistrationToken(input: unknown): { token: string; expiresAt: string } {
    const grant = parseRegistrationGrant(input, this.#now());
    const token = `emu-${randomUUID()}`;
    this.#registrations.set(token, grant);
    if (grant.subscribe) {
      this.subscribe([
        grant.customerAwsAccountId
          ? { id: grant.customerAwsAccountId, ...(grant.licenseArn ? { licenseArn: grant.licenseArn } : {}) }
          : { id: grant.customerIdentifier as string, productCode: grant.productCode },
      ]);
    }
    return { token, expiresAt: new Date(grant.expiresAtMs).toISOString() };
  }

  resolveCustomer(body: unknown): Record<string, string> {
    const o = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const token = o.RegistrationToken;
    if (typeof token !== 'string' || token.length === 0) {
      throw new ServiceError(
        'ValidationException',
        "1 validation error detected: Value null at 'registrationToken' failed to satisfy constraint: Member must not be null",
      );
    }
    const grant = this.#registrations.get(token);
    if (!grant) throw new ServiceError('InvalidTokenException', 'Registration token is invalid.');
    if (this.#now() >= grant.expiresAtMs) {
      throw new ServiceError('ExpiredTokenException', 'Registration token has expired.');
    }
    const out: Record<string, string> = { ProductCode: grant.productCode };
    if (grant.customerAwsAccountId) out.CustomerAWSAccountId = grant.customerAwsAccountId;
    if (grant.licenseArn) out.LicenseArn = grant.licenseArn;
    if (grant.customerIdentifier) out.CustomerIdentifier = grant.customerIdentifier;
    return out;
  }

  // ── MeterUsage ─────────────────────────────────────────────────────────────────────────────────

  /**
   * `caller` stands in for the EC2 instance / ECS task / EKS pod AWS scopes MeterUsage to; the server
   * passes the SigV4 access key id.
   */
  meterUsage(body: unknown, caller: string): { MeteringRecordId: string } {
    const input = parseMeterUsage(body);
    this.#checkProductCode(input.ProductCode);
    this.#checkDimension(input.UsageDimension);
    const quantity = input.UsageQuantity ?? 0;
    checkAllocations(input.UsageAllocations, quantity);
    if (input.DryRun) {
      throw new ServiceError('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.');
    }

    const now = this.#now();
    const ms = input.Timestamp * 1000;
    if (!isWithinAcceptanceWindow('MeterUsage', ms, now, this.#windowMs.MeterUsage)) {
      throw new ServiceError(
        'TimestampOutOfBoundsException',
        `Timestamp ${new Date(ms).toISOString()} is outside the allowed range`,
      );
    }

    const tokenKey =
      input.ClientToken === undefined ? undefined : JSON.stringify([caller, input.ClientToken]);
    const fingerprint = JSON.stringify([
      input.ProductCode,
      input.Timestamp,
      input.UsageDimension,
      quantity,
      input.UsageAllocations ?? null,
    ]);
    const seen = tokenKey === undefined ? undefined : this.#tokens.get(tokenKey);
    if (seen) {
      if (seen.fingerprint !== fingerprint) {
        throw new ServiceError(
          'IdempotencyConflictException',
          'ClientToken was already used with different parameters',
        );
      }
      return { MeteringRecordId: seen.meteringRecordId };
    }

    const hour = hourStart(ms);
    const key = JSON.stringify(['MeterUsage', caller, input.ProductCode, input.UsageDimension, hour]);
    const existing = this.#records.get(key);
    if (existing && existing.quantity !== quantity) {
      this.#duplicates += 1;
      throw new ServiceError(
        'DuplicateRequestException',
        `A record for ${input.UsageDimension} at ${hourIso(hour)} was already metered with quantity ${existing.quantity}`,
      );
    }
    const accepted =
      existing ??
      this.#accept(
        'MeterUsage',
        {
          productCode: input.ProductCode,
          customer: caller,
          customerType: 'caller',
          dimension: input.UsageDimension,
          quantity,
          usageAllocations: input.UsageAllocations,
        },
        hour,
        now,
      );
    this.#records.set(key, accepted);
    if (tokenKey !== undefined)
      this.#tokens.set(tokenKey, { fingerprint, meteringRecordId: accepted.meteringRecordId });
    return { MeteringRecordId: accepted.meteringRecordId };
  }

  // ── shared ─────────────────────────────────────────────────────────────────────────────────────

  #checkProductCode(productCode: string): void {
    if (this.#productCodes && !this.#productCodes.has(productCode)) {
      throw new ServiceError('InvalidProductCodeException', `Unknown product code ${productCode}`);
    }
  }

  #checkDimension(dimension: string): void {
    if (this.#dimensions && !this.#dimensions.has(dimension)) {
      throw new ServiceError('InvalidUsageDimensionException', `Unknown usage dimension ${dimension}`);
    }
  }

  #accept(
    api: MeteringApi,
    fields: Omit<AcceptedRecord, 'api' | 'timestamp' | 'meteringRecordId' | 'acceptedAt'>,
    hour: number,
    now: number,
  ): AcceptedRecord {
    const record: AcceptedRecord = {
      api,
      ...fields,
      timestamp: hourIso(hour),
      meteringRecordId: this.#newRecordId(),
      acceptedAt: new Date(now).toISOString(),
    };
    // Keep the JSON listing free of `"key": undefined` noise.
    for (const k of ['productCode', 'licenseArn', 'usageAllocations'] as const) {
      if (record[k] === undefined) delete record[k];
    }
    return record;
  }
}

function count(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/**
 * Usage allocations: quantities sum to the record's quantity (InvalidUsageAllocationsException), each
 * allocation has a distinct tag set, and tags obey the count/length/pattern rules (InvalidTagException).
 */
function checkAllocations(allocations: UsageAllocationInput[] | undefined, quantity: number): void {
  if (allocations === undefined) return;
  const sum = allocations.reduce((total, a) => total + a.AllocatedUsageQuantity, 0);
  if (sum !== quantity) {
    throw new ServiceError(
      'InvalidUsageAllocationsException',
      `Sum of allocated usage quantities (${sum}) is not equal to the usage quantity (${quantity})`,
    );
  }
  const tagSets = new Set<string>();
  for (const allocation of allocations) {
    const tags = allocation.Tags ?? [];
    if (allocation.Tags !== undefined && (tags.length === 0 || tags.length > MAX_TAGS)) {
      throw new ServiceError(
        'InvalidTagException',
        `An allocation must have 1 to ${MAX_TAGS} tags, got ${tags.length}`,
      );
    }
    const keys = new Set<string>();
    for (const { Key, Value } of tags) {
      if (Key.length < 1 || Key.length > 100 || !TAG_PATTERN.test(Key)) {
        throw new ServiceError('InvalidTagException', `Invalid tag key '${Key}'`);
      }
      if (Value.length < 1 || Value.length > 256 || !TAG_PATTERN.test(Value)) {
        throw new ServiceError('InvalidTagException', `Invalid value for tag '${Key}'`);
      }
      if (keys.has(Key)) throw new ServiceError('InvalidTagException', `Duplicate tag key '${Key}'`);
      keys.add(Key);
    }
    const setKey = JSON.stringify(
      tags.map((t) => [t.Key, t.Value]).sort(([a = ''], [b = '']) => (a < b ? -1 : a > b ? 1 : 0)),
    );
    if (tagSets.has(setKey)) {
      throw new ServiceError(
        'InvalidUsageAllocationsException',
        'Each usage allocation must have a unique set of tags',
      );
    }
    tagSets.add(setKey);
  }
}

interface RegistrationGrant {
  productCode: string;
  customerAwsAccountId?: string;
  licenseArn?: string;
  customerIdentifier?: string;
  expiresAtMs: number;
  subscribe: boolean;
}

/** The admin API's token request: `{productCode, customerAwsAccountId?, licenseArn?, customerIdentifier?, ttlSeconds?, subscribe?}`. */
function parseRegistrationGrant(input: unknown, now: number): RegistrationGrant {
  const o = (typeof input === 'object' && input !== null ? input : {}) as Record<string, unknown>;
  const problems: string[] = [];
  const text = (key: string, pattern?: RegExp): string | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0 || (pattern && !pattern.test(v))) {
      problems.push(`${key} must be ${pattern ? `a string matching ${pattern}` : 'a non-empty string'}`);
      return undefined;
    }
    return v;
  };
  const productCode = text('productCode');
  const customerAwsAccountId = text('customerAwsAccountId', /^\d{12}$/);
  const licenseArn = text('licenseArn', /^arn:aws[a-z-]*:license-manager:/);
  const customerIdentifier = text('customerIdentifier');
  if (!productCode) problems.push('productCode is required');
  if (!customerAwsAccountId && !customerIdentifier) {
    problems.push('customerAwsAccountId (with licenseArn) or customerIdentifier is required');
  }
  const ttl = o.ttlSeconds ?? 3600;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl)) problems.push('ttlSeconds must be a number');
  if (o.subscribe !== undefined && typeof o.subscribe !== 'boolean')
    problems.push('subscribe must be a boolean');
  if (problems.length) throw new ConfigError('registration token request', problems);
  return {
    productCode: productCode as string,
    ...(customerAwsAccountId ? { customerAwsAccountId } : {}),
    ...(licenseArn ? { licenseArn } : {}),
    ...(customerIdentifier ? { customerIdentifier } : {}),
    expiresAtMs: now + (ttl as number) * 1000,
    subscribe: o.subscribe !== false,
  };
}
