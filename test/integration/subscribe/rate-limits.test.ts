/**
 * What an attacker's volume costs the registration service, over HTTP against the real server, Redis and
 * the emulator (which counts every ResolveCustomer call), with the defaults a user gets: a flood from one
 * address is cut off with 429s before it reaches AWS, a re-posted token is answered from the cache, and
 * unique certificate paths neither evict a good certificate nor get refetched while their failure is cached.
 */
import { createSign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { SNS_CERT_FETCHES_PER_MINUTE } from '../../../src/subscribe/sns-certificates.ts';
import { deleteKeys, testLogger } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { certPath, makeTestCa, type TestCa } from '../../support/sns-test-ca.ts';

const PRODUCT = 'prod-test';
const TOPIC = `arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-${PRODUCT}`;
const SNS_HOST = 'https://sns.us-east-1.amazonaws.com';
/** The documented defaults (README): per address per minute, and fresh certificate fetches per minute. */
const PER_ADDRESS_DEFAULT = 10;
const CERT_FETCHES_DEFAULT = SNS_CERT_FETCHES_PER_MINUTE;

describe('registration under volume (default configuration)', () => {
  let ca: TestCa;
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let registration: RunningRegistration | undefined;
  let certServer: Server | undefined;
  const hits: string[] = [];
  let base = '';

  beforeAll(async () => {
    ca = makeTestCa('rate-limits');
    // Every certificate GET lands here and is recorded; only the good path has a certificate.
    certServer = createServer((req, res) => {
      hits.push(req.url ?? '');
      if (req.url === certPath('good')) res.writeHead(200).end(ca.sns.cert);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => certServer?.listen(0, '127.0.0.1', resolve));
    const { port } = certServer.address() as AddressInfo;
    emulator = await startEmulator({});
    tp = testPipeline('rate-limits', {
      customers: {},
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
      },
    });
    const config = tp.config(['registration']);
    // Nothing about limits in the environment: the defaults a user gets.
    expect(config.registration.ratePerAddress).toBe(PER_ADDRESS_DEFAULT);
    expect(config.registration.trustedProxyHops).toBe(0);
    registration = await startRegistration(config, testLogger(), {
      sns: {
        roots: [ca.root],
        get: async (url) => {
          const res = await fetch(`http://127.0.0.1:${port}${new URL(url).pathname}`);
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          return new Uint8Array(await res.arrayBuffer());
        },
      },
    });
    base = `http://127.0.0.1:${registration.server.port}/marketplace`;
  });
  afterAll(async () => {
    await registration?.stop();
    await emulator?.close();
    if (tp) await deleteKeys(tp.run);
    await new Promise<void>((resolve) => {
      certServer?.closeAllConnections();
      certServer?.close(() => resolve());
    });
    ca?.cleanup();
  });

  const resolveCalls = () => emulator?.state.snapshot().calls.ResolveCustomer ?? 0;
  const register = (token: string, headers: Record<string, string> = {}) =>
    fetch(`${base}/register`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams({ 'x-amzn-marketplace-token': token }),
    });

  it('a token posted again is answered without a second ResolveCustomer call', async () => {
    const res = await fetch(`${emulator?.url}/_emulator/registration-tokens`, {
      method: 'POST',
      body: JSON.stringify({ productCode: PRODUCT, customerAwsAccountId: '424242424242' }),
    });
    const { token } = (await res.json()) as { token: string };
    const before = resolveCalls();
    expect((await register(token)).status).toBe(200);
    expect((await register(token)).status).toBe(200);
    expect(resolveCalls() - before).toBe(1);
    // A token AWS does not know: asked once, then refused from the cache too.
    const bogus = `bogus-${Date.now()}`;
    expect((await register(bogus)).status).toBe(400);
    expect((await register(bogus)).status).toBe(400);
    expect(resolveCalls() - before).toBe(2);
  });

  it('unique certificate paths neither evict a good certificate nor get refetched while their failure is cached', async () => {
    const sign = (certUrl: string) => {
      const fields: Record<string, string> = {
        Type: 'Notification',
        MessageId: `m-${Math.random()}`,
        TopicArn: TOPIC,
        Message: JSON.stringify({
          action: 'entitlement-updated',
          'customer-identifier': 'c',
          'product-code': PRODUCT,
        }),
        Timestamp: new Date().toISOString(),
      };
      const canonical = ['Message', 'MessageId', 'Timestamp', 'TopicArn', 'Type']
        .map((k) => `${k}\n${fields[k]}\n`)
        .join('');
      const Signature = createSign('RSA-SHA256').update(canonical).sign(ca.sns.key, 'base64');
      return { ...fields, SignatureVersion: '2', Signature, SigningCertURL: certUrl };
    };
    const send = async (certUrl: string) => {
      const res = await fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'x-amz-sns-message-type': 'Notification' },
        body: JSON.stringify(sign(certUrl)),
      });
      await res.text();
      return res.status;
    };
    const good = `${SNS_HOST}${certPath('good')}`;
    expect(await send(good)).toBe(200);
    expect(hits.filter((h) => h === certPath('good'))).toHaveLength(1);

    // 100 fresh paths, each refused (503: SNS would deliver again), each fetched at most once and only
    // within the per-minute budget.
    const paths = Array.from({ length: 100 }, (_, i) => certPath(`unique${i}x`));
    for (const path of paths) expect(await send(`${SNS_HOST}${path}`)).toBe(503);
    const fetched = hits.filter((h) => h !== certPath('good'));
    expect(fetched.length).toBeLessThanOrEqual(CERT_FETCHES_DEFAULT);
    // The same failing paths again: their failures are cached, nothing is fetched.
    for (const path of paths.slice(0, 5)) expect(await send(`${SNS_HOST}${path}`)).toBe(503);
    expect(hits.filter((h) => h !== certPath('good'))).toEqual(fetched);
    // The good certificate is still there: accepted without a second fetch.
    expect(await send(good)).toBe(200);
    expect(hits.filter((h) => h === certPath('good'))).toHaveLength(1);
  });

  it('1,000 POSTs from one address get 429s, and at most the per-address limit reaches ResolveCustomer', async () => {
    const before = resolveCalls();
    const statuses: number[] = [];
    let sample: Response | undefined;
    for (let batch = 0; batch < 20; batch++) {
      const answers = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          // A forged X-Forwarded-For changes nothing: no proxy is trusted by default.
          register(`flood-${batch}-${i}`, { 'x-forwarded-for': `203.0.113.${i}` }),
        ),
      );
      for (const res of answers) {
        statuses.push(res.status);
        if (res.status === 429 && !sample) sample = res;
        else await res.text();
      }
    }
    const limited = statuses.filter((s) => s === 429).length;
    expect(limited).toBeGreaterThanOrEqual(1000 - PER_ADDRESS_DEFAULT);
    expect(resolveCalls() - before).toBeLessThanOrEqual(PER_ADDRESS_DEFAULT);
    expect(sample).toBeDefined();
    expect(Number(sample?.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(sample?.headers.get('x-content-type-options')).toBe('nosniff');
    expect(sample?.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(sample?.headers.get('content-type')).toContain('text/html');
    expect(await sample?.text()).toContain('Too many requests');
  });
});
