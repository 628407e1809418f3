/**
 * Subscription lifecycle events, from either channel AWS Marketplace uses, turned into one status change:
 * - the legacy SNS subscription topic: a JSON `Message` with an `action`;
 * - EventBridge (`aws.agreement-marketplace`): purchase agreement created/ended, license updated/deprovisioned.
 * Pure functions: the HTTP side verifies where the event came from before it gets here. An event that
 * changes a buyer's contract (`entitlement-updated`, `License Updated`, a new agreement) also asks for its
 * entitlements to be fetched again (GetEntitlements, src/subscribe/entitlements.ts).
 */
import type { CustomerRef, SubscriptionStatus } from '../state/customer-directory.ts';

export interface LifecycleChange {
  ref: CustomerRef;
  status: SubscriptionStatus;
  eventMs: number;
  /** The event's own name (action or detail-type), for logs and metrics. */
  name: string;
  /** The buyer's entitlements may have changed with it: fetch them again. */
  refreshEntitlements?: boolean;
}

/** The legacy entitlement topic's `entitlement-updated`: no status, but the contract changed. */
export interface EntitlementsChanged {
  entitlementsChanged: CustomerRef;
  eventMs: number;
  name: string;
}

/** Not a change: the event is valid but says nothing about the subscription or the contract. */
export interface Ignored {
  ignored: string;
}

/** The event cannot be read: a reason for the 400 answer and the log. */
export interface Unreadable {
  invalid: string;
}

export type Parsed = LifecycleChange | EntitlementsChanged | Ignored | Unreadable;

// A Map: the action comes from the message, and `constructor` must not find Object's.
const ACTIONS: ReadonlyMap<string, SubscriptionStatus> = new Map<string, SubscriptionStatus>([
  ['subscribe-success', 'subscribed'],
  ['subscribe-fail', 'subscribe-failed'],
  ['unsubscribe-pending', 'unsubscribe-pending'],
  ['unsubscribe-success', 'unsubscribed'],
]);

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

/** The `Message` of a verified SNS notification, with the notification's Timestamp. */
export function parseSnsAction(message: string, timestamp: string): Parsed {
  let body: Json | undefined;
  try {
    body = obj(JSON.parse(message));
  } catch {
    return { invalid: 'the SNS Message is not JSON' };
  }
  if (!body) return { invalid: 'the SNS Message is not a JSON object' };
  const action = str(body.action);
  if (!action) return { invalid: 'the SNS Message has no action' };
  const status = ACTIONS.get(action);
  const entitlements = action === 'entitlement-updated';
  if (!status && !entitlements) return { ignored: action };
  const productCode = str(body['product-code']);
  const licenseArn = str(body['license-arn']);
  const accountId = str(body['customer-aws-account-id']);
  const identifier = str(body['customer-identifier']);
  const eventMs = Date.parse(timestamp);
  if (!Number.isFinite(eventMs)) return { invalid: 'the SNS Timestamp is not a time' };
  const ref = customerRef({ licenseArn, accountId, identifier, productCode });
  if (!ref)
    return {
      invalid: `${action} names no customer (license-arn, customer-aws-account-id or customer-identifier with product-code)`,
    };
  if (!status) return { entitlementsChanged: ref, eventMs, name: action };
  return { ref, status, eventMs, name: action };
}

/**
 * An EventBridge event as an API destination delivers it. A purchase agreement that ends because it was
 * renewed or replaced is followed by a new one: that end is not an unsubscription.
 */
export function parseEventBridge(event: unknown): Parsed {
  const e = obj(event);
  if (!e) return { invalid: 'the event is not a JSON object' };
  const source = str(e.source);
  const type = str(e['detail-type']);
  const detail = obj(e.detail);
  if (!source || !type || !detail)
    return { invalid: 'an EventBridge event needs source, detail-type and detail' };
  if (source !== 'aws.agreement-marketplace' && source !== 'aws.marketplace')
    return { ignored: `${source}: ${type}` };
  const agreement = obj(detail.agreement);
  const endStatus = str(agreement?.status)?.toUpperCase();
  let status: SubscriptionStatus | undefined;
  if (type.startsWith('Purchase Agreement Created') || type.startsWith('License Updated'))
    status = 'subscribed';
  else if (type.startsWith('License Deprovisioned')) status = 'unsubscribed';
  else if (type.startsWith('Purchase Agreement Ended')) {
    if (endStatus === 'RENEWED' || endStatus === 'REPLACED') return { ignored: `${type} (${endStatus})` };
    status = 'unsubscribed';
  }
  if (!status) return { ignored: type };
  const eventMs = Date.parse(str(e.time) ?? '');
  if (!Number.isFinite(eventMs)) return { invalid: 'the event has no valid time' };
  const ref = customerRef({
    licenseArn: str(obj(detail.license)?.arn) ?? str(detail.licenseArn),
    accountId: str(obj(agreement?.acceptor)?.accountId) ?? str(obj(detail.acceptor)?.accountId),
    identifier: undefined,
    productCode: str(obj(detail.product)?.code) ?? str(detail.productCode),
  });
  if (!ref)
    return { invalid: `${type} names no customer (license.arn, or acceptor.accountId with product.code)` };
  // A new agreement or an updated license may bring other entitlements (an upgrade, a renewal).
  return {
    ref,
    status,
    eventMs,
    name: type,
    ...(status === 'subscribed' ? { refreshEntitlements: true } : {}),
  };
}

function customerRef(ids: {
  licenseArn: string | undefined;
  accountId: string | undefined;
  identifier: string | undefined;
  productCode: string | undefined;
}): CustomerRef | undefined {
  const ref: CustomerRef = {};
  if (ids.productCode) ref.productCode = ids.productCode;
  if (ids.licenseArn) ref.licenseArn = ids.licenseArn;
  if (ids.accountId && ids.productCode) ref.customerAwsAccountId = ids.accountId;
  if (ids.identifier && ids.productCode) ref.customerIdentifier = ids.identifier;
  return ref.licenseArn || ref.customerAwsAccountId || ref.customerIdentifier ? ref : undefined;
}
