/**
 * Registration tokens as AWS Marketplace mints them for a buyer's browser after a purchase, and
 * ResolveCustomer's answer for one.
 */
import { randomUUID } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import { ServiceError } from './service-error.ts';
import type { CustomerSubscription } from './subscriptions.ts';

export class EmulatedRegistrations {
  /** Registration tokens the buyer's browser would carry to the seller's registration URL. */
  readonly #grants = new Map<string, RegistrationGrant>();
  readonly #now: () => number;
  readonly #subscribe: (subscriptions: CustomerSubscription[]) => void;

  constructor(now: () => number, subscribe: (subscriptions: CustomerSubscription[]) => void) {
    this.#now = now;
    this.#subscribe = subscribe;
  }

  /**
   * Mints the token AWS Marketplace would hand the buyer's browser after a purchase. The buyer is
   * subscribed at once (AWS sends subscribe-success around the same time).
   */
  issue(input: unknown): { token: string; expiresAt: string } {
    const grant = parseRegistrationGrant(input, this.#now());
    const token = `emu-${randomUUID()}`;
    this.#grants.set(token, grant);
    if (grant.subscribe) {
      this.#subscribe([
        grant.customerAwsAccountId
          ? { id: grant.customerAwsAccountId, ...(grant.licenseArn ? { licenseArn: grant.licenseArn } : {}) }
          : { id: grant.customerIdentifier as string, productCode: grant.productCode },
      ]);
    }
    return { token, expiresAt: new Date(grant.expiresAtMs).toISOString() };
  }

  resolve(body: unknown): Record<string, string> {
    const o = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const token = o.RegistrationToken;
    if (typeof token !== 'string' || token.length === 0) {
      throw new ServiceError(
        'ValidationException',
        "1 validation error detected: Value null at 'registrationToken' failed to satisfy constraint: Member must not be null",
      );
    }
    const grant = this.#grants.get(token);
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
