/**
 * What a registration POST may cost, shared by every replica through Redis:
 * - a fixed window per client address and one overall (rateWindow.lua), answered with a 429 page;
 * - ResolveCustomer's answer cached per token, so a token posted again costs no AWS call.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { isMeterlineError, MeterlineError } from '../errors.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import type { ResolvedCustomer } from '../state/customer-directory.ts';
import { RequestWindows, ResolvedTokens } from '../state/registration-store.ts';

export const RATE_WINDOW_MS = 60_000;

/**
 * A resolved token's answer is kept this long. A token maps to one buyer and product for good, so a longer
 * life could not make the answer wrong; AWS lets a token live for hours, and an hour covers a buyer going
 * back and forth on the registration page (the case the cache is for) without keeping every token a day.
 */
export const RESOLVED_TTL_MS = 60 * 60_000;
/** AWS refused the token: kept briefly, so a token posted in a loop is not asked again and again. */
export const REFUSED_TTL_MS = 60_000;
const REFUSED_CODES: ReadonlySet<string> = new Set([
  'registration_token_invalid',
  'registration_token_expired',
]);

/**
 * The client's address: the socket's, unless `trustedHops` proxies are configured in front of us; then the
 * X-Forwarded-For entry that the outermost trusted proxy appended (entries left of it are the client's
 * own claims). IPv6 is limited per /64, the block one subscriber usually gets.
 */
export function clientAddress(req: IncomingMessage, trustedHops: number): string {
  let address = req.socket.remoteAddress ?? 'unknown';
  if (trustedHops > 0) {
    const header = req.headers['x-forwarded-for'];
    const entries = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean);
    const entry = entries[Math.max(0, entries.length - trustedHops)];
    if (entry && isIP(entry)) address = entry;
  }
  return addressScope(address);
}

/** IPv4 (mapped or not) as is; IPv6 as its /64 prefix. */
export function addressScope(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

export interface RegistrationLimits {
  perAddress: number;
  total: number;
}

export class RegistrationLimiter {
  readonly #windows: RequestWindows;
  readonly #limits: RegistrationLimits;

  constructor(redis: ScriptedRedis, keys: Keys, limits: RegistrationLimits) {
    this.#windows = new RequestWindows(redis, keys);
    this.#limits = limits;
  }

  /**
   * 0 when the request may go on, else the ms until it may be tried again. The address is counted first:
   * one address's flood is stopped there and spends none of everyone's budget.
   */
  async admit(address: string): Promise<number> {
    const own = await this.#windows.count(`address:${address}`, RATE_WINDOW_MS, this.#limits.perAddress);
    if (own > 0) return own;
    return this.#windows.count('total', RATE_WINDOW_MS, this.#limits.total);
  }
}

type Cached = { customer: ResolvedCustomer } | { refused: string };

/**
 * `resolve` with its answers kept in Redis by the token's SHA-256. Only successes and AWS's InvalidToken /
 * ExpiredToken are kept; throttling or an outage is not an answer about the token. A Redis failure here
 * falls through to AWS: the cache saves quota, it is not needed to register.
 */
export function cachedResolve(
  redis: ScriptedRedis,
  keys: Keys,
  resolve: (token: string) => Promise<ResolvedCustomer>,
): (token: string) => Promise<ResolvedCustomer> {
  const answers = new ResolvedTokens(redis, keys);
  return async (token) => {
    const hash = createHash('sha256').update(token).digest('hex');
    const hit = await answers.get(hash).catch(() => null);
    if (hit) {
      const cached = JSON.parse(hit) as Cached;
      if ('customer' in cached) return cached.customer;
      throw new MeterlineError(
        cached.refused === 'registration_token_expired'
          ? 'registration_token_expired'
          : 'registration_token_invalid',
        'AWS refused this registration token (cached answer)',
      );
    }
    let customer: ResolvedCustomer;
    try {
      customer = await resolve(token);
    } catch (error) {
      if (isMeterlineError(error) && REFUSED_CODES.has(error.code)) {
        await answers
          .keep(hash, JSON.stringify({ refused: error.code } satisfies Cached), REFUSED_TTL_MS)
          .catch(() => undefined);
      }
      throw error;
    }
    await answers
      .keep(hash, JSON.stringify({ customer } satisfies Cached), RESOLVED_TTL_MS)
      .catch(() => undefined);
    return customer;
  };
}
