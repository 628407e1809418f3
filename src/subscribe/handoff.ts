/**
 * The signed hand-off from registration to the seller's onboarding page: a compact JWS (RFC 7515) with
 * HS256, i.e. a JWT (RFC 7519), so a seller can check it in any language with a standard library. Bare ids
 * in the query could be typed by anyone; this token says meterline resolved this buyer, minutes ago, once.
 *
 *   header  {"alg":"HS256","typ":"JWT"}
 *   payload {iss:"meterline", productCode, customerAwsAccountId | customerIdentifier, licenseArn?, tenant,
 *            iat, exp (seconds), jti (random nonce)}
 *
 * Single use: verifyHandoffOnce records the jti in Redis (SET NX, expiring with the token).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { MeterlineError } from '../errors.ts';
import type { ResolvedCustomer } from '../state/customer-directory.ts';
import type { HandoffNonces } from '../state/handoff-nonces.ts';

/** Long enough to finish a sign-up page, short enough that a leaked link is soon worthless. */
export const HANDOFF_TTL_SECONDS = 600;
/** Clocks of meterline's pods and the seller's backend may differ a little. */
const CLOCK_SKEW_SECONDS = 60;
export const HANDOFF_QUERY_PARAM = 'handoff_token';
const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

export interface HandoffClaims {
  iss: 'meterline';
  productCode: string;
  customerAwsAccountId?: string;
  customerIdentifier?: string;
  licenseArn?: string;
  /** The tenant id meterline stored: the `customer` of the buyer's usage events. */
  tenant: string;
  iat: number;
  exp: number;
  jti: string;
}

function mac(input: string, secret: string): Buffer {
  return createHmac('sha256', secret).update(input).digest();
}

/** Signs a hand-off for a registered buyer; `nowMs` lets tests mint one that has already expired. */
export function signHandoff(
  customer: ResolvedCustomer,
  tenant: string,
  secret: string,
  options: { nowMs?: number; ttlSeconds?: number } = {},
): string {
  const iat = Math.floor((options.nowMs ?? Date.now()) / 1000);
  const claims: HandoffClaims = {
    iss: 'meterline',
    productCode: customer.productCode,
    ...(customer.customerAwsAccountId ? { customerAwsAccountId: customer.customerAwsAccountId } : {}),
    ...(customer.customerIdentifier ? { customerIdentifier: customer.customerIdentifier } : {}),
    ...(customer.licenseArn ? { licenseArn: customer.licenseArn } : {}),
    tenant,
    iat,
    exp: iat + (options.ttlSeconds ?? HANDOFF_TTL_SECONDS),
    jti: randomBytes(16).toString('base64url'),
  };
  const input = `${HEADER}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${input}.${mac(input, secret).toString('base64url')}`;
}

const invalid = (why: string) =>
  new MeterlineError('handoff_token_invalid', `hand-off token refused: ${why}`);
const B64URL = /^[A-Za-z0-9_-]+$/;
const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 2048;

/**
 * Checks signature, header and claims, and expiry; no state. Throws handoff_token_invalid (forged,
 * malformed) or handoff_token_expired. The signature is checked before anything in the token is trusted.
 */
export function verifyHandoff(token: string, secret: string, nowMs = Date.now()): HandoffClaims {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) invalidThrow('not a compact JWS');
  const [header, payload, signature] = parts as [string, string, string];
  const given = Buffer.from(signature, 'base64url');
  const expected = mac(`${header}.${payload}`, secret);
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    invalidThrow('bad signature (forged, altered, or signed with another key)');
  let h: unknown;
  let c: Record<string, unknown>;
  try {
    h = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
    c = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    invalidThrow('header or payload is not JSON');
  }
  // Only HS256: never "none", never an algorithm the token picks for itself.
  if ((h as { alg?: unknown })?.alg !== 'HS256') invalidThrow('alg must be HS256');
  if (typeof c !== 'object' || c === null) invalidThrow('payload is not an object');
  const ints = [c.iat, c.exp].every((n) => Number.isSafeInteger(n));
  const identity = str(c.customerAwsAccountId) || str(c.customerIdentifier);
  if (c.iss !== 'meterline' || !str(c.productCode) || !str(c.tenant) || !str(c.jti) || !ints || !identity)
    invalidThrow('claims missing or malformed');
  const now = Math.floor(nowMs / 1000);
  if ((c.exp as number) <= now) {
    throw new MeterlineError(
      'handoff_token_expired',
      `hand-off token refused: expired at ${new Date((c.exp as number) * 1000).toISOString()}`,
    );
  }
  if ((c.iat as number) > now + CLOCK_SKEW_SECONDS) invalidThrow('issued in the future');
  return c as unknown as HandoffClaims;
}

function invalidThrow(why: string): never {
  throw invalid(why);
}

/**
 * verifyHandoff, then spends the token: its nonce is recorded with SET NX for the token's remaining life, so
 * a second verification, here or on any replica, is refused as reused (handoff_token_reused).
 */
export async function verifyHandoffOnce(
  token: string,
  secret: string,
  nonces: Pick<HandoffNonces, 'spend'>,
  nowMs = Date.now(),
): Promise<HandoffClaims> {
  const claims = verifyHandoff(token, secret, nowMs);
  const ttlMs = Math.max(1, claims.exp * 1000 - nowMs);
  let spent: boolean;
  try {
    spent = await nonces.spend(claims.jti, nowMs, ttlMs);
  } catch (error) {
    throw new MeterlineError('redis_error', 'the hand-off nonce store (Redis) is unavailable', {
      retriable: true,
      cause: error,
    });
  }
  if (!spent) throw new MeterlineError('handoff_token_reused', 'hand-off token refused: already used');
  return claims;
}
