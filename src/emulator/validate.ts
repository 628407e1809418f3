/**
 * Wire input → typed input, the way AWS's front end does it before the service sees a request:
 * a wrong JSON type is a SerializationException (first one wins); violated model constraints
 * (required, length, range, pattern) are collected into one ValidationException. Constraints come
 * from the service model (botocore `meteringmarketplace/2016-01-14`). Business rules (customer
 * identity, allocations, windows, dedupe) are the state's job, not this module's.
 */
import { serializationError, validationError } from './service-error.ts';

export const MAX_BATCH_RECORDS = 25;
export const MAX_INTEGER = 2_147_483_647;
const MAX_ALLOCATIONS = 2500;

const PRODUCT_CODE = /^[-a-zA-Z0-9/=:_.@]*$/;
const ACCOUNT_ID = /^[0-9]+$/;
const LICENSE_ARN =
  /^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{0,62}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{0,1023}$/;

export interface TagInput {
  Key: string;
  Value: string;
}

export interface UsageAllocationInput {
  AllocatedUsageQuantity: number;
  Tags?: TagInput[];
}

export interface UsageRecordInput {
  /** Epoch seconds, possibly fractional (awsJson1_1 timestamp format). */
  Timestamp: number;
  CustomerIdentifier?: string;
  CustomerAWSAccountId?: string;
  LicenseArn?: string;
  Dimension: string;
  Quantity?: number;
  UsageAllocations?: UsageAllocationInput[];
}

export interface BatchMeterUsageInput {
  UsageRecords: UsageRecordInput[];
  ProductCode?: string;
}

export interface MeterUsageInput {
  ProductCode: string;
  Timestamp: number;
  UsageDimension: string;
  UsageQuantity?: number;
  DryRun?: boolean;
  UsageAllocations?: UsageAllocationInput[];
  ClientToken?: string;
}

type Json = Record<string, unknown>;

/** Reads one structure; type errors throw at once, constraint violations accumulate in `violations`. */
class Reader {
  readonly violations: string[] = [];

  struct(value: unknown, path: string): Json {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw serializationError(`Expected an object at '${path || '$'}'`);
    }
    return value as Json;
  }

  string(
    obj: Json,
    key: string,
    path: string,
    c: { required?: boolean; min?: number; max?: number; pattern?: RegExp } = {},
  ): string | undefined {
    const v = obj[key];
    const at = join(path, key);
    if (v === undefined || v === null) return this.#missing(at, c.required);
    if (typeof v !== 'string') throw serializationError(`Expected a string at '${at}'`);
    if (c.min !== undefined && v.length < c.min) {
      this.#violate(v, at, `Member must have length greater than or equal to ${c.min}`);
    }
    if (c.max !== undefined && v.length > c.max) {
      this.#violate(v, at, `Member must have length less than or equal to ${c.max}`);
    }
    if (c.pattern && !c.pattern.test(v)) {
      this.#violate(v, at, `Member must satisfy regular expression pattern: ${c.pattern.source}`);
    }
    return v;
  }

  integer(obj: Json, key: string, path: string, required = false): number | undefined {
    const v = obj[key];
    const at = join(path, key);
    if (v === undefined || v === null) return this.#missing(at, required);
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw serializationError(`Expected an integer at '${at}'`);
    if (v < 0) this.#violate(v, at, 'Member must have value greater than or equal to 0');
    if (v > MAX_INTEGER) this.#violate(v, at, `Member must have value less than or equal to ${MAX_INTEGER}`);
    return v;
  }

  timestamp(obj: Json, key: string, path: string): number | undefined {
    const v = obj[key];
    const at = join(path, key);
    if (v === undefined || v === null) return this.#missing(at, true);
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw serializationError(`Expected epoch seconds (a number) at '${at}'`);
    }
    return v;
  }

  boolean(obj: Json, key: string, path: string): boolean | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw serializationError(`Expected a boolean at '${join(path, key)}'`);
    return v;
  }

  list(obj: Json, key: string, path: string, c: { required?: boolean; min: number; max: number }) {
    const v = obj[key];
    const at = join(path, key);
    if (v === undefined || v === null) return this.#missing(at, c.required);
    if (!Array.isArray(v)) throw serializationError(`Expected a list at '${at}'`);
    if (v.length < c.min)
      this.#violate(undefined, at, `Member must have length greater than or equal to ${c.min}`);
    if (v.length > c.max)
      this.#violate(undefined, at, `Member must have length less than or equal to ${c.max}`);
    return v as unknown[];
  }

  allocations(obj: Json, key: string, path: string): UsageAllocationInput[] | undefined {
    const list = this.list(obj, key, path, { min: 1, max: MAX_ALLOCATIONS });
    return list?.map((raw, i) => {
      const at = `${join(path, key)}.${i + 1}.member`;
      const a = this.struct(raw, at);
      const allocation: UsageAllocationInput = {
        AllocatedUsageQuantity: this.integer(a, 'AllocatedUsageQuantity', at, true) ?? 0,
      };
      // Tag count and pattern are business rules (InvalidTagException); only types are checked here.
      const tags = a.Tags;
      if (tags !== undefined && tags !== null) {
        if (!Array.isArray(tags)) throw serializationError(`Expected a list at '${join(at, 'Tags')}'`);
        allocation.Tags = tags.map((t, j) => {
          const tagAt = `${join(at, 'Tags')}.${j + 1}.member`;
          const tag = this.struct(t, tagAt);
          return { Key: this.string(tag, 'Key', tagAt) ?? '', Value: this.string(tag, 'Value', tagAt) ?? '' };
        });
      }
      return allocation;
    });
  }

  /** Throws the collected ValidationException, if any. */
  done(): void {
    if (this.violations.length > 0) throw validationError(this.violations);
  }

  #missing(at: string, required = false): undefined {
    if (required)
      this.violations.push(`Value null at '${at}' failed to satisfy constraint: Member must not be null`);
    return undefined;
  }

  #violate(value: unknown, at: string, constraint: string): void {
    const shown = value === undefined ? '' : ` '${String(value)}'`;
    this.violations.push(`Value${shown} at '${at}' failed to satisfy constraint: ${constraint}`);
  }
}

/** AWS reports member paths in camelCase: `usageRecords.3.member.quantity`. */
function join(path: string, key: string): string {
  const member = key.charAt(0).toLowerCase() + key.slice(1);
  return path ? `${path}.${member}` : member;
}

function usageRecord(r: Reader, raw: unknown, at: string): UsageRecordInput {
  const o = r.struct(raw, at);
  const record: UsageRecordInput = {
    Timestamp: r.timestamp(o, 'Timestamp', at) ?? 0,
    Dimension: r.string(o, 'Dimension', at, { required: true, min: 1, max: 255 }) ?? '',
  };
  const customerIdentifier = r.string(o, 'CustomerIdentifier', at, { max: 255 });
  const accountId = r.string(o, 'CustomerAWSAccountId', at, { min: 1, max: 255, pattern: ACCOUNT_ID });
  const licenseArn = r.string(o, 'LicenseArn', at, { pattern: LICENSE_ARN });
  const quantity = r.integer(o, 'Quantity', at);
  const allocations = r.allocations(o, 'UsageAllocations', at);
  if (customerIdentifier !== undefined) record.CustomerIdentifier = customerIdentifier;
  if (accountId !== undefined) record.CustomerAWSAccountId = accountId;
  if (licenseArn !== undefined) record.LicenseArn = licenseArn;
  if (quantity !== undefined) record.Quantity = quantity;
  if (allocations !== undefined) record.UsageAllocations = allocations;
  return record;
}

export function parseBatchMeterUsage(body: unknown): BatchMeterUsageInput {
  const r = new Reader();
  const o = r.struct(body, '');
  // The model allows 0..25; an empty batch is rejected anyway, since sending one is always a client bug.
  const list = r.list(o, 'UsageRecords', '', { required: true, min: 1, max: MAX_BATCH_RECORDS });
  const productCode = r.string(o, 'ProductCode', '', { max: 255, pattern: PRODUCT_CODE });
  const records = list?.map((raw, i) => usageRecord(r, raw, `usageRecords.${i + 1}.member`)) ?? [];
  r.done();
  return productCode === undefined
    ? { UsageRecords: records }
    : { UsageRecords: records, ProductCode: productCode };
}

export function parseMeterUsage(body: unknown): MeterUsageInput {
  const r = new Reader();
  const o = r.struct(body, '');
  const input: MeterUsageInput = {
    ProductCode: r.string(o, 'ProductCode', '', { required: true, max: 255, pattern: PRODUCT_CODE }) ?? '',
    Timestamp: r.timestamp(o, 'Timestamp', '') ?? 0,
    UsageDimension: r.string(o, 'UsageDimension', '', { required: true, min: 1, max: 255 }) ?? '',
  };
  const quantity = r.integer(o, 'UsageQuantity', '');
  const dryRun = r.boolean(o, 'DryRun', '');
  const allocations = r.allocations(o, 'UsageAllocations', '');
  const clientToken = r.string(o, 'ClientToken', '', { min: 1, max: 64 });
  r.done();
  if (quantity !== undefined) input.UsageQuantity = quantity;
  if (dryRun !== undefined) input.DryRun = dryRun;
  if (allocations !== undefined) input.UsageAllocations = allocations;
  if (clientToken !== undefined) input.ClientToken = clientToken;
  return input;
}
