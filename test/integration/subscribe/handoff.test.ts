/**
 * The signed hand-off to the seller's onboarding page, over HTTP on the real registration server, real Redis
 * and the emulator's ResolveCustomer: the redirect carries a short-lived HS256 JWS and no bare ids, and the
 * real `meterline handoff verify` accepts a fresh token once and refuses forged, expired and reused ones.
 */
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { deleteKeys, testLogger } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const exec = promisify(execFile);
const MAIN = new URL('../../../src/cli/main.ts', import.meta.url).pathname;
const SECRET = 'handoff-test-secret-0123456789-abcdefghij';
const REDIRECT = 'https://seller.example/onboard?from=aws';
const buyer = {
  customerAwsAccountId: '424242424242',
  licenseArn: 'arn:aws:license-manager::424242424242:license:l-h1',
};

const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** What any seller would write from the README's format: HS256 over `header.payload`. */
function signWith(key: string, payload: Record<string, unknown>): string {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

describe('signed hand-off to the onboarding page', () => {
  let tp: TestPipeline;
  let emulator: RunningEmulator | undefined;
  let registration: RunningRegistration | undefined;
  let base: string;

  beforeAll(async () => {
    emulator = await startEmulator({});
    tp = testPipeline('handoff', {
      customers: {},
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
        METERLINE_REGISTRATION_REDIRECT_URL: REDIRECT,
        METERLINE_HANDOFF_SIGNING_SECRET: SECRET,
      },
    });
    registration = await startRegistration(tp.config(['registration']), testLogger());
    base = `http://127.0.0.1:${registration.server.port}/marketplace`;
  });
  afterAll(async () => {
    await registration?.stop();
    await emulator?.close();
    await deleteKeys(tp.run);
  });

  /** A buyer's browser through the registration URL: the 303's Location. */
  async function register(grant: Record<string, unknown> = buyer): Promise<URL> {
    const minted = await fetch(`${emulator?.url}/_emulator/registration-tokens`, {
      method: 'POST',
      body: JSON.stringify({ productCode: 'prod-test', ...grant }),
    });
    const { token } = (await minted.json()) as { token: string };
    const res = await fetch(`${base}/register`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ 'x-amzn-marketplace-token': token }),
    });
    expect(res.status).toBe(303);
    return new URL(res.headers.get('location') ?? '');
  }

  /** The real CLI in a child process: exit code, stdout, stderr. */
  async function verify(token: string, env: Record<string, string> = {}) {
    try {
      const r = await exec(process.execPath, [MAIN, 'handoff', 'verify', token], {
        env: { ...process.env, ...tp.env, KAFKA_BROKERS: '', ...env },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  it('the redirect carries a signed token and no bare account id', async () => {
    const location = await register();
    expect(`${location.origin}${location.pathname}`).toBe('https://seller.example/onboard');
    expect([...location.searchParams.keys()].sort()).toEqual(['from', 'handoff_token']);
    expect(location.toString()).not.toContain(buyer.customerAwsAccountId);
    expect(location.searchParams.get('handoff_token')).toMatch(
      /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/,
    );
  });

  it('`meterline handoff verify` accepts a fresh token once, printing its claims, and refuses it reused', async () => {
    const token = (await register()).searchParams.get('handoff_token') ?? '';
    const first = await verify(token);
    expect(first.code, first.stderr).toBe(0);
    const claims = JSON.parse(first.stdout) as Record<string, unknown>;
    expect(claims).toMatchObject({
      iss: 'meterline',
      productCode: 'prod-test',
      customerAwsAccountId: buyer.customerAwsAccountId,
      licenseArn: buyer.licenseArn,
      tenant: buyer.customerAwsAccountId,
    });
    expect(claims.exp as number).toBeGreaterThan(claims.iat as number);
    expect((claims.exp as number) - (claims.iat as number)).toBeLessThanOrEqual(600);
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{22,}$/);

    const again = await verify(token);
    expect(again.code).not.toBe(0);
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/handoff_token_reused.*already used/);
  });

  it('a legacy buyer (CustomerIdentifier) gets the identifier in the token', async () => {
    const token = (await register({ customerIdentifier: 'cust-legacy-h2' })).searchParams.get(
      'handoff_token',
    );
    const r = await verify(token ?? '');
    expect(r.code, r.stderr).toBe(0);
    const claims = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(claims).toMatchObject({ customerIdentifier: 'cust-legacy-h2', tenant: 'cust-legacy-h2' });
    expect(claims.customerAwsAccountId).toBeUndefined();
  });

  it('refuses forged tokens: a changed signature, a changed payload, another key, alg none', async () => {
    const token = (await register()).searchParams.get('handoff_token') ?? '';
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const flipped = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BA' : 'AA'}`;
    const stranger = b64url(JSON.stringify({ ...claims, customerAwsAccountId: '999999999999' }));
    const forgeries = [
      `${header}.${payload}.${flipped}`,
      `${header}.${stranger}.${signature}`,
      signWith('another-key-of-at-least-32-bytes-long!', claims),
      `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${payload}.`,
      'not-a-token',
    ];
    for (const forged of forgeries) {
      const r = await verify(forged);
      expect(r.code, forged).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/handoff_token_invalid/);
    }
    // The genuine token was not spent by the forgeries' checks.
    expect((await verify(token)).code).toBe(0);
  });

  it('refuses an expired token, even correctly signed', async () => {
    const { signHandoff } = await import('../../../src/subscribe/handoff.ts');
    const expired = signHandoff({ productCode: 'prod-test', ...buyer }, buyer.customerAwsAccountId, SECRET, {
      nowMs: Date.now() - 20 * 60_000,
    });
    const r = await verify(expired);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/handoff_token_expired.*expired/);
  });

  it('the command refuses to run without a signing secret, naming the key', async () => {
    const token = (await register()).searchParams.get('handoff_token') ?? '';
    const r = await verify(token, { METERLINE_HANDOFF_SIGNING_SECRET: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('METERLINE_HANDOFF_SIGNING_SECRET');
  });
});
