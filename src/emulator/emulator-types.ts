/** What the emulator answers and records, and how it is set up: the shapes its state and server share. */
import type { MeteringApi } from '../metering/aws-window.ts';
import type { FaultSettings, InjectedCounts } from './faults.ts';
import type { ServiceError } from './service-error.ts';
import type { CustomerSubscription, CustomerType } from './subscriptions.ts';
import type { UsageAllocationInput, UsageRecordInput } from './validate.ts';

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
