/**
 * GetEntitlements (AWS Marketplace Entitlement Service, 2017-01-11), emulated from entitlements set
 * through the admin API. The shapes are the service model's:
 * - request: `ProductCode` (required, 1–255), `Filter` (CUSTOMER_IDENTIFIER | CUSTOMER_AWS_ACCOUNT_ID |
 *   DIMENSION | LICENSE_ARN → a non-empty list; a key's values are unioned, keys intersected; the two
 *   customer keys are mutually exclusive), `NextToken`, `MaxResults`;
 * - answer: `Entitlements` (ProductCode, Dimension, CustomerIdentifier or CustomerAWSAccountId,
 *   LicenseArn, Value with one of IntegerValue | DoubleValue | BooleanValue | StringValue, ExpirationDate
 *   as epoch seconds) and `NextToken` while more remain;
 * - errors: InvalidParameterException, ThrottlingException, InternalServiceErrorException (the server
 *   injects the last two like it does for metering calls).
 * Entitlements are returned whatever their expiration date: "the minimum date through which this
 * entitlement is expected to remain valid" is the caller's to judge.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import { ServiceError, validationError } from './service-error.ts';

export type EntitlementValue =
  | { IntegerValue: number }
  | { DoubleValue: number }
  | { BooleanValue: boolean }
  | { StringValue: string };

/** One entitlement as the admin API sets it: one of customerAwsAccountId / customerIdentifier. */
export interface EmulatedEntitlement {
  productCode: string;
  dimension: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  licenseArn?: string;
  value: EntitlementValue;
  /** ISO time. */
  expirationDate?: string;
}

const FILTER_KEYS = ['CUSTOMER_IDENTIFIER', 'CUSTOMER_AWS_ACCOUNT_ID', 'DIMENSION', 'LICENSE_ARN'] as const;
type FilterKey = (typeof FILTER_KEYS)[number];
/** The emulator's page when MaxResults is absent: small, so callers that ignore NextToken are caught. */
export const DEFAULT_ENTITLEMENTS_PAGE = 25;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export class EmulatedEntitlements {
  /** By (product, customer, dimension): setting one again replaces it. Insertion order is answer order. */
  readonly #entries = new Map<string, EmulatedEntitlement>();
  readonly #pageSize: number;

  constructor(pageSize = DEFAULT_ENTITLEMENTS_PAGE) {
    this.#pageSize = pageSize;
  }

  list(): EmulatedEntitlement[] {
    return [...this.#entries.values()].map((e) => structuredClone(e));
  }

  /** The admin API's change: `{clear?: true, set?: [...], remove?: [{productCode, customer…, dimension?}]}`. */
  change(input: unknown): void {
    const o = isObject(input) ? input : {};
    const problems: string[] = [];
    const set = o.set ?? [];
    const remove = o.remove ?? [];
    if (!Array.isArray(set)) problems.push('set must be a list of entitlements');
    if (!Array.isArray(remove))
      problems.push('remove must be a list of {productCode, customer id, dimension?}');
    const parsed = Array.isArray(set) ? set.map((e, i) => parseEntitlement(e, `set.${i}`, problems)) : [];
    if (o.clear !== undefined && typeof o.clear !== 'boolean') problems.push('clear must be a boolean');
    if (problems.length) throw new ConfigError('entitlements change', problems);
    if (o.clear === true) this.#entries.clear();
    for (const r of Array.isArray(remove) ? remove : []) {
      const m = isObject(r) ? r : {};
      for (const [key, e] of this.#entries) {
        const customer = e.customerAwsAccountId ?? e.customerIdentifier;
        if (
          e.productCode === m.productCode &&
          (customer === m.customerAwsAccountId || customer === m.customerIdentifier) &&
          (m.dimension === undefined || m.dimension === e.dimension)
        )
          this.#entries.delete(key);
      }
    }
    for (const e of parsed) {
      if (!e) continue;
      const key = JSON.stringify([
        e.productCode,
        e.customerAwsAccountId ?? null,
        e.customerIdentifier ?? null,
        e.dimension,
      ]);
      this.#entries.delete(key);
      this.#entries.set(key, e);
    }
  }

  getEntitlements(body: unknown): { Entitlements: Json[]; NextToken?: string } {
    const input = isObject(body) ? body : {};
    const violations: string[] = [];
    const productCode = input.ProductCode;
    if (typeof productCode !== 'string' || productCode.length < 1 || productCode.length > 255) {
      violations.push(
        "Value at 'productCode' failed to satisfy constraint: Member must have length between 1 and 255",
      );
    }
    const filter = new Map<FilterKey, Set<string>>();
    if (input.Filter !== undefined) {
      if (!isObject(input.Filter))
        violations.push("Value at 'filter' failed to satisfy constraint: Member must be a map");
      else
        for (const [key, values] of Object.entries(input.Filter)) {
          if (!(FILTER_KEYS as readonly string[]).includes(key)) {
            violations.push(
              `Value '${key}' at 'filter' failed to satisfy constraint: Member must satisfy enum value set: [${FILTER_KEYS.join(', ')}]`,
            );
          } else if (
            !Array.isArray(values) ||
            values.length === 0 ||
            !values.every((v) => typeof v === 'string')
          ) {
            violations.push(
              `Value at 'filter.${key}' failed to satisfy constraint: Member must have length greater than or equal to 1`,
            );
          } else filter.set(key as FilterKey, new Set(values as string[]));
        }
    }
    const max = input.MaxResults;
    if (max !== undefined && (typeof max !== 'number' || !Number.isInteger(max) || max < 1)) {
      violations.push(
        "Value at 'maxResults' failed to satisfy constraint: Member must be a positive integer",
      );
    }
    if (violations.length) throw validationError(violations);
    if (filter.has('CUSTOMER_IDENTIFIER') && filter.has('CUSTOMER_AWS_ACCOUNT_ID')) {
      throw new ServiceError(
        'InvalidParameterException',
        'CUSTOMER_IDENTIFIER and CUSTOMER_AWS_ACCOUNT_ID are mutually exclusive: use one or the other',
      );
    }
    const matches = [...this.#entries.values()].filter(
      (e) =>
        e.productCode === productCode &&
        accepts(filter, 'CUSTOMER_AWS_ACCOUNT_ID', e.customerAwsAccountId) &&
        accepts(filter, 'CUSTOMER_IDENTIFIER', e.customerIdentifier) &&
        accepts(filter, 'DIMENSION', e.dimension) &&
        accepts(filter, 'LICENSE_ARN', e.licenseArn),
    );
    // The token is bound to the request it continues (everything but the token itself).
    const { NextToken: _token, ...rest } = input;
    const bound = createHash('sha256').update(JSON.stringify(rest)).digest('base64url').slice(0, 16);
    let offset = 0;
    if (input.NextToken !== undefined) {
      const m = typeof input.NextToken === 'string' ? /^(\d+)\.([\w-]+)$/.exec(input.NextToken) : null;
      if (!m || m[2] !== bound)
        throw new ServiceError('InvalidParameterException', 'NextToken is not valid for this request');
      offset = Number(m[1]);
    }
    const size = (max as number | undefined) ?? this.#pageSize;
    const page = matches.slice(offset, offset + size);
    const out: { Entitlements: Json[]; NextToken?: string } = { Entitlements: page.map(wire) };
    if (offset + size < matches.length) out.NextToken = `${offset + size}.${bound}`;
    return out;
  }
}

function accepts(filter: Map<FilterKey, Set<string>>, key: FilterKey, value: string | undefined): boolean {
  const allowed = filter.get(key);
  return allowed === undefined || (value !== undefined && allowed.has(value));
}

function wire(e: EmulatedEntitlement): Json {
  const out: Json = { ProductCode: e.productCode, Dimension: e.dimension };
  if (e.customerAwsAccountId) out.CustomerAWSAccountId = e.customerAwsAccountId;
  if (e.customerIdentifier) out.CustomerIdentifier = e.customerIdentifier;
  if (e.licenseArn) out.LicenseArn = e.licenseArn;
  out.Value = e.value;
  // awsJson1_1 timestamps are epoch seconds.
  if (e.expirationDate) out.ExpirationDate = Date.parse(e.expirationDate) / 1000;
  return out;
}

function parseEntitlement(raw: unknown, at: string, problems: string[]): EmulatedEntitlement | undefined {
  const o = isObject(raw) ? raw : {};
  const before = problems.length;
  const text = (key: string, required: boolean, pattern?: RegExp): string | undefined => {
    const v = o[key];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v.length === 0 || (pattern && !pattern.test(v))) {
      problems.push(`${at}.${key}: ${pattern ? `a string matching ${pattern}` : 'a non-empty string'}`);
      return undefined;
    }
    return v;
  };
  const productCode = text('productCode', true);
  const dimension = text('dimension', true);
  const customerAwsAccountId = text('customerAwsAccountId', false, /^\d{12}$/);
  const customerIdentifier = text('customerIdentifier', false);
  const licenseArn = text('licenseArn', false, /^arn:aws[a-z-]*:license-manager:/);
  if (
    (customerAwsAccountId === undefined) === (customerIdentifier === undefined) &&
    problems.length === before
  ) {
    problems.push(`${at}: exactly one of customerAwsAccountId or customerIdentifier`);
  }
  const value = parseValue(o.value);
  if (!value)
    problems.push(
      `${at}.value: a number, or one of {IntegerValue}, {DoubleValue}, {BooleanValue}, {StringValue}`,
    );
  let expirationDate: string | undefined;
  if (o.expirationDate !== undefined) {
    const ms = typeof o.expirationDate === 'string' ? Date.parse(o.expirationDate) : Number.NaN;
    if (Number.isFinite(ms)) expirationDate = new Date(ms).toISOString();
    else problems.push(`${at}.expirationDate: an ISO-8601 time`);
  }
  if (problems.length > before || !productCode || !dimension || !value) return undefined;
  return {
    productCode,
    dimension,
    ...(customerAwsAccountId ? { customerAwsAccountId } : {}),
    ...(customerIdentifier ? { customerIdentifier } : {}),
    ...(licenseArn ? { licenseArn } : {}),
    value,
    ...(expirationDate ? { expirationDate } : {}),
  };
}

/** A bare number is an IntegerValue when whole, else a DoubleValue; or the wire shape with one member. */
function parseValue(v: unknown): EntitlementValue | undefined {
  if (typeof v === 'number' && Number.isFinite(v))
    return Number.isInteger(v) ? { IntegerValue: v } : { DoubleValue: v };
  if (!isObject(v) || Object.keys(v).length !== 1) return undefined;
  if (Number.isInteger(v.IntegerValue)) return { IntegerValue: v.IntegerValue as number };
  if (typeof v.DoubleValue === 'number' && Number.isFinite(v.DoubleValue))
    return { DoubleValue: v.DoubleValue };
  if (typeof v.BooleanValue === 'boolean') return { BooleanValue: v.BooleanValue };
  if (typeof v.StringValue === 'string') return { StringValue: v.StringValue };
  return undefined;
}
