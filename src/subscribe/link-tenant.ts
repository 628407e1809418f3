/**
 * Linking the seller's own tenant id to a buyer's AWS identity. The seller's backend receives the signed
 * hand-off token on its onboarding page (src/subscribe/handoff.ts), and hands it back with the tenant id its
 * application uses (`POST /marketplace/link`, or `meterline customers link`). meterline verifies the token,
 * spends it, and moves the product subscription it names to that tenant id: usage events then carry the
 * application's own id and are billed to the AWS identity behind the token.
 *
 * The token is spent only when the link can be made (it is verified and the subscription and tenant id are
 * checked first), so a refused link does not cost the seller its token; a forged, expired or reused token
 * links nothing.
 */
import type { CustomerMap } from '../config/customers.ts';
import { MeterlineError } from '../errors.ts';
import {
  type CustomerDirectory,
  type DirectoryEntry,
  isTenantId,
  type ResolvedCustomer,
  subscriptionField,
} from '../state/customer-directory.ts';
import type { HandoffNonces } from '../state/handoff-nonces.ts';
import { type HandoffClaims, verifyHandoff, verifyHandoffOnce } from './handoff.ts';

export interface LinkRequest {
  token: string;
  tenant: unknown;
}

export interface LinkResult {
  /** The seller's tenant id, now the `customer` of this subscription's usage events. */
  tenant: string;
  /** The tenant id the subscription had before (registration's: the AWS account id). */
  previousTenant: string;
  productCode: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  licenseArn?: string;
  status: DirectoryEntry['status'];
  /** False when the subscription was already under this tenant id (nothing changed). */
  changed: boolean;
}

export interface LinkDeps {
  directory: CustomerDirectory;
  /** The customers file: a tenant id it names is mapped there, so a link to it would never be used. */
  customerMap: CustomerMap;
  secret: string;
  /** Spent hand-off tokens. */
  nonces: Pick<HandoffNonces, 'spend'>;
  now?: () => number;
}

/**
 * Verifies the token (throws handoff_token_invalid, _expired or _reused), checks the tenant id
 * (tenant_invalid, tenant_taken) and the subscription (subscription_not_found), then spends the token and
 * links. Redis failures are redis_error (retriable).
 */
export async function linkTenant(request: LinkRequest, deps: LinkDeps): Promise<LinkResult> {
  const { tenant } = request;
  if (!isTenantId(tenant)) {
    throw new MeterlineError(
      'tenant_invalid',
      'the tenant id must be a string of 1 to 128 characters, without control characters (as usage events carry it)',
    );
  }
  const nowMs = (deps.now ?? Date.now)();
  // Signature, header and expiry first: nothing in the token is trusted before.
  const claims = verifyHandoff(request.token, deps.secret, nowMs);
  if (deps.customerMap.has(tenant)) {
    throw new MeterlineError(
      'tenant_taken',
      'that tenant id is in the customers file, which maps it: it cannot be linked to a registered subscription',
    );
  }
  const identity = identityOf(claims);
  const entry = await redisCall(() => deps.directory.entryOf(identity));
  if (!entry) {
    throw new MeterlineError(
      'subscription_not_found',
      `no registered subscription to ${claims.productCode} for this buyer (it never registered, or its entry was removed)`,
    );
  }
  if (entry.tenant !== tenant) {
    const taken = await redisCall(() =>
      deps.directory.getSubscriptions([{ tenant, productCode: entry.productCode }]),
    );
    if (taken.has(subscriptionField(tenant, entry.productCode))) throw tenantTaken(entry.productCode);
  }
  await verifyHandoffOnce(request.token, deps.secret, deps.nonces, nowMs);
  const linked = await redisCall(() => deps.directory.link(identity, tenant));
  if (linked.outcome === 'tenant_taken') throw tenantTaken(entry.productCode);
  if (linked.outcome === 'subscription_not_found') {
    throw new MeterlineError('subscription_not_found', 'the subscription was removed while linking');
  }
  const e = linked.entry;
  return {
    tenant,
    previousTenant: linked.outcome === 'linked' ? linked.previousTenant : tenant,
    productCode: e.productCode,
    ...(e.customerAwsAccountId ? { customerAwsAccountId: e.customerAwsAccountId } : {}),
    ...(e.customerIdentifier ? { customerIdentifier: e.customerIdentifier } : {}),
    ...(e.licenseArn ? { licenseArn: e.licenseArn } : {}),
    status: e.status,
    changed: linked.outcome === 'linked',
  };
}

function identityOf(claims: HandoffClaims): ResolvedCustomer {
  return {
    productCode: claims.productCode,
    ...(claims.customerAwsAccountId ? { customerAwsAccountId: claims.customerAwsAccountId } : {}),
    ...(claims.customerIdentifier ? { customerIdentifier: claims.customerIdentifier } : {}),
    ...(claims.licenseArn ? { licenseArn: claims.licenseArn } : {}),
  };
}

function tenantTaken(productCode: string): MeterlineError {
  return new MeterlineError(
    'tenant_taken',
    `that tenant id already holds a subscription to ${productCode}: a tenant id names one buyer per product`,
  );
}

async function redisCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw new MeterlineError('redis_error', 'the customer directory (Redis) is unavailable', {
      retriable: true,
      cause: error,
    });
  }
}
