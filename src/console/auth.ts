/**
 * Who is asking: a signed session cookie given for a sign-in token, or the identity header an
 * authenticating proxy sets. Every POST carries a CSRF token tied to the session; a session is signed with
 * a key derived from the configured tokens, so replicas agree and changing the tokens signs everyone out.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ConsoleRole, ConsoleSettings } from '../config/console.ts';
import type { Viewer } from './html.ts';

const SESSION_COOKIE = 'ml_session';
/** Before sign-in: the cookie half of the sign-in form's CSRF token (double submit). */
const PRE_COOKIE = 'ml_pre';
const SESSION_MS = 12 * 3_600_000;

interface Session {
  n: string;
  r: ConsoleRole;
  s: string;
  e: number;
}

const b64 = (text: string) => Buffer.from(text).toString('base64url');

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function cookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

export class ConsoleAuth {
  readonly #settings: ConsoleSettings;
  readonly #key: Buffer;
  readonly #now: () => number;

  constructor(settings: ConsoleSettings, now: () => number = Date.now) {
    this.#settings = settings;
    this.#now = now;
    // Behind a proxy alone there is no shared secret: a random key, so one replica (the chart runs one).
    this.#key = settings.users.length
      ? createHash('sha256')
          .update(
            `meterline-console|${settings.users.map((u) => `${u.name}:${u.role}:${u.token}`).join(',')}`,
          )
          .digest()
      : randomBytes(32);
  }

  #mac(text: string): string {
    return createHmac('sha256', this.#key).update(text).digest('base64url');
  }

  /** The signed-in user, or undefined: the identity header when configured and present, else the cookie. */
  viewer(req: IncomingMessage): Viewer | undefined {
    const header = this.#settings.identityHeader;
    const who = header ? req.headers[header] : undefined;
    if (typeof who === 'string' && who.trim()) {
      const name = who.trim();
      const role = this.#settings.operators.includes(name) ? 'operator' : 'viewer';
      return { name, role, csrf: this.#mac(`csrf|header|${name}`), session: false };
    }
    const raw = cookies(req).get(SESSION_COOKIE);
    const dot = raw?.lastIndexOf('.') ?? -1;
    if (!raw || dot < 0) return undefined;
    const body = raw.slice(0, dot);
    if (!same(raw.slice(dot + 1), this.#mac(`session|${body}`))) return undefined;
    let s: Session;
    try {
      s = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Session;
    } catch {
      return undefined;
    }
    if (!(s.e > this.#now())) return undefined;
    return { name: s.n, role: s.r, csrf: this.#mac(`csrf|session|${s.s}`), session: true };
  }

  /** The Set-Cookie of a new session for a valid token; undefined for any other token. */
  signIn(token: string, secure: boolean): { name: string; cookie: string } | undefined {
    // Every entry is compared, so the time taken says nothing about which one matched.
    let user: ConsoleSettings['users'][number] | undefined;
    for (const u of this.#settings.users) if (same(u.token, token) && !user) user = u;
    if (!user) return undefined;
    const session: Session = {
      n: user.name,
      r: user.role,
      s: randomBytes(16).toString('base64url'),
      e: this.#now() + SESSION_MS,
    };
    const body = b64(JSON.stringify(session));
    return {
      name: user.name,
      cookie: cookie(SESSION_COOKIE, `${body}.${this.#mac(`session|${body}`)}`, SESSION_MS / 1000, secure),
    };
  }

  signOutCookie(secure: boolean): string {
    return cookie(SESSION_COOKIE, '', 0, secure);
  }

  /** The sign-in form's token, and the cookie that goes with it (set when the form is shown). */
  signInCsrf(req: IncomingMessage, secure: boolean): { token: string; cookie?: string } {
    const existing = cookies(req).get(PRE_COOKIE);
    const value =
      existing && /^[A-Za-z0-9_-]{22}$/.test(existing) ? existing : randomBytes(16).toString('base64url');
    return {
      token: this.#mac(`csrf|pre|${value}`),
      ...(value === existing ? {} : { cookie: cookie(PRE_COOKIE, value, 3600, secure) }),
    };
  }

  signInCsrfValid(req: IncomingMessage, token: string): boolean {
    const value = cookies(req).get(PRE_COOKIE);
    return Boolean(value) && same(token, this.#mac(`csrf|pre|${value}`));
  }

  csrfValid(viewer: Viewer, token: string): boolean {
    return same(token, viewer.csrf);
  }
}

function cookie(name: string, value: string, maxAgeS: number, secure: boolean): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(maxAgeS)}${secure ? '; Secure' : ''}`;
}
