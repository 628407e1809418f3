/**
 * The console's sign-in (src/console/auth.ts) on its own: a session cookie that is tampered with, expired
 * or signed under other tokens is no session; the identity header is taken only when configured; each
 * session has its own CSRF token.
 */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { ConsoleSettings } from '../../../src/config/console.ts';
import { ConsoleAuth } from '../../../src/console/auth.ts';

const TOKEN = 'op-token-0123456789abcdef0123';
const settings: ConsoleSettings = {
  port: 0,
  users: [
    { name: 'ana', role: 'operator', token: TOKEN },
    { name: 'vic', role: 'viewer', token: 'ro-token-0123456789abcdef0123' },
  ],
  identityHeader: undefined,
  operators: [],
};

const request = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
const cookieOf = (setCookie: string) => setCookie.split(';')[0] as string;

describe('console sign-in', () => {
  it('gives a session for a valid token only, with the role of its entry', () => {
    const auth = new ConsoleAuth(settings);
    expect(auth.signIn('not-a-token', false)).toBeUndefined();
    expect(auth.signIn(`${TOKEN}x`, false)).toBeUndefined();
    const session = auth.signIn(TOKEN, true);
    expect(session?.cookie).toMatch(/HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/);
    const viewer = auth.viewer(request({ cookie: cookieOf(session?.cookie ?? '') }));
    expect(viewer).toMatchObject({ name: 'ana', role: 'operator', session: true });
  });

  it('refuses a tampered, an expired or a foreign session cookie', () => {
    let now = 1_000_000;
    const auth = new ConsoleAuth(settings, () => now);
    const cookie = cookieOf(auth.signIn('ro-token-0123456789abcdef0123', false)?.cookie ?? '');
    const [body, mac] = cookie.slice('ml_session='.length).split('.') as [string, string];
    // The viewer's session rewritten to say operator, with the old signature.
    const forged = Buffer.from(
      Buffer.from(body, 'base64url').toString('utf8').replace('"viewer"', '"operator"'),
    ).toString('base64url');
    expect(auth.viewer(request({ cookie: `ml_session=${forged}.${mac}` }))).toBeUndefined();
    expect(auth.viewer(request({ cookie }))?.role).toBe('viewer');
    // Other tokens, other key: a session of another deployment (or before a rotation) is none here.
    const rotated = new ConsoleAuth({
      ...settings,
      users: [{ name: 'ana', role: 'operator', token: 'x'.repeat(30) }],
    });
    expect(rotated.viewer(request({ cookie }))).toBeUndefined();
    now += 13 * 3_600_000;
    expect(auth.viewer(request({ cookie }))).toBeUndefined();
  });

  it('gives each session its own CSRF token and accepts only that one', () => {
    const auth = new ConsoleAuth(settings);
    const a = auth.viewer(request({ cookie: cookieOf(auth.signIn(TOKEN, false)?.cookie ?? '') }));
    const b = auth.viewer(request({ cookie: cookieOf(auth.signIn(TOKEN, false)?.cookie ?? '') }));
    if (!a || !b) throw new Error('no session');
    expect(a.csrf).not.toBe(b.csrf);
    expect(auth.csrfValid(a, a.csrf)).toBe(true);
    expect(auth.csrfValid(a, b.csrf)).toBe(false);
    expect(auth.csrfValid(a, '')).toBe(false);
  });

  it('takes the identity header only when configured; operators by name', () => {
    const tokensOnly = new ConsoleAuth(settings);
    expect(tokensOnly.viewer(request({ 'x-forwarded-user': 'ana@example.com' }))).toBeUndefined();
    const proxied = new ConsoleAuth({
      ...settings,
      users: [],
      identityHeader: 'x-forwarded-user',
      operators: ['ana@example.com'],
    });
    expect(proxied.viewer(request({ 'x-forwarded-user': 'ana@example.com' }))).toMatchObject({
      name: 'ana@example.com',
      role: 'operator',
      session: false,
    });
    expect(proxied.viewer(request({ 'x-forwarded-user': 'bo@example.com' }))?.role).toBe('viewer');
    expect(proxied.viewer(request({}))).toBeUndefined();
  });
});
