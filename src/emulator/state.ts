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
import {
  DEFAULT_ACCEPTANCE_WINDOW_MS,
  isWithinAcceptanceWindow,
  type MeteringApi,
} from '../metering/aws-window.ts';
import { hourIso, hourStart } from '../time/hours.ts';
import { checkAllocations } from './allocation-rules.ts';
import type {
  AcceptedRecord,
  BatchMeterUsageOutput,
  EmulatorSnapshot,
  EmulatorStateOptions,
  FaultHooks,
  UsageRecordStatus,
} from './emulator-types.ts';
import { EmulatedEntitlements } from './entitlements.ts';
import { FaultInjector, type FaultSettings, parseFaultUpdate } from './faults.ts';
import { RequestQuota } from './quota.ts';
import { EmulatedRegistrations } from './registrations.ts';
import { ServiceError } from './service-error.ts';
import { type CustomerSubscription, type CustomerType, EmulatedSubscriptions } from './subscriptions.ts';
import {
  type BatchMeterUsageInput,
  parseBatchMeterUsage,
  parseMeterUsage,
  type UsageRecordInput,
} from './validate.ts';

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
  readonly #subscriptions = new EmulatedSubscriptions();
  readonly #registrations: EmulatedRegistrations;
  /** Accepted records by dedupe key, in acceptance order. */
  readonly #records = new Map<string, AcceptedRecord>();
  /** MeterUsage ClientTokens, per caller. */
  readonly #tokens = new Map<string, TokenEntry>();
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
    this.#registrations = new EmulatedRegistrations(this.#now, (subs) => this.subscribe(subs));
    this.subscribe(options.customers ?? []);
  }

  // ── customers ──────────────────────────────────────────────────────────────────────────────────

  subscribe(customers: Iterable<string | CustomerSubscription>): void {
    this.#subscriptions.subscribe(customers);
  }

  /** Ends the subscriptions of these buyers: every product's, or only `productCode`'s when given. */
  unsubscribe(ids: Iterable<string>, productCode?: string): void {
    this.#subscriptions.unsubscribe(ids, productCode);
  }

  customers(): CustomerSubscription[] {
    return this.#subscriptions.customers();
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
      this.#subscriptions.checkLicense(
        record.CustomerAWSAccountId ?? '',
        record.LicenseArn ?? '',
        input.ProductCode,
      );
  }

  #meterBatchRecord(
    input: BatchMeterUsageInput,
    record: UsageRecordInput,
    now: number,
  ): { MeteringRecordId?: string; Status: UsageRecordStatus } {
    const customerType: CustomerType = record.CustomerAWSAccountId !== undefined ? 'account' : 'identifier';
    const customer = record.CustomerAWSAccountId ?? record.CustomerIdentifier ?? '';
    if (!this.#subscriptions.isSubscribed(customer, input.ProductCode))
      return { Status: 'CustomerNotSubscribed' };

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

  // ── ResolveCustomer ────────────────────────────────────────────────────────────────────────────

  /**
   * Mints the token AWS Marketplace would hand the buyer's browser after a purchase. The buyer is
   * subscribed at once (AWS sends subscribe-success around the same time).
   */
  issueRegistrationToken(input: unknown): { token: string; expiresAt: string } {
    return this.#registrations.issue(input);
  }

  resolveCustomer(body: unknown): Record<string, string> {
    return this.#registrations.resolve(body);
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
