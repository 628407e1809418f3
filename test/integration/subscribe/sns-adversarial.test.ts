/**
 * The registration service's public endpoints, attacked over HTTP with the defaults a user gets: the real
 * server, Redis and (for ResolveCustomer) the emulator. SNS messages are signed for real with a test CA that
 * reaches the verifier only through its `roots` option; every outbound GET the service makes (certificates,
 * subscription confirmations) goes through one seam to a local server that records each request, so
 * "nothing was fetched" is a count of hits, not an assumption.
 */
import { createSign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { deleteKeys, testLogger } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { certPath, makeTestCa, type TestCa } from '../../support/sns-test-ca.ts';

const PRODUCT = 'prod-test';
/** AWS Marketplace's account, which owns the products' SNS topics. */
const MARKETPLACE = '287250355862';
const SUBSCRIPTION_TOPIC = `arn:aws:sns:us-east-1:${MARKETPLACE}:aws-mp-subscription-notification-${PRODUCT}`;
const ENTITLEMENT_TOPIC = `arn:aws:sns:us-east-1:${MARKETPLACE}:aws-mp-entitlement-notification-${PRODUCT}`;
/** A stranger's topic, named like Marketplace's, in their own account. */
const FOREIGN_TOPIC = `arn:aws:sns:us-east-1:111122223333:aws-mp-subscription-notification-${PRODUCT}`;
const SNS_HOST = 'https://sns.us-east-1.amazonaws.com';

type Fields = Record<string, string>;

/** The local stand-in for every host the service may GET: records each request, serves PEMs by path. */
interface Outbound {
  server: Server;
  hits: string[];
  serve: Map<string, string>;
  get: (url: string) => Promise<Uint8Array>;
}

async function outbound(): Promise<Outbound> {
  const hits: string[] = [];
  const serve = new Map<string, string>();
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const pem = serve.get(path);
    if (path === '/' && (req.url ?? '').includes('Action=ConfirmSubscription')) {
      res.writeHead(200).end('<ConfirmSubscriptionResponse/>');
    } else if (pem) res.writeHead(200).end(pem);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    hits,
    serve,
    // Whatever host the service asks for, the request lands here and is recorded.
    get: async (url) => {
      const u = new URL(url);
      const res = await fetch(`http://127.0.0.1:${port}${u.pathname}${u.search}`, { redirect: 'error' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

describe('registration endpoints under attack (default configuration)', () => {
  let ca: TestCa;
  let out: Outbound;
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let registration: RunningRegistration | undefined;
  let base = '';
  let seq = 0;

  beforeAll(async () => {
    ca = makeTestCa('sns-adversarial');
    out = await outbound();
    out.serve.set(certPath('good'), ca.sns.cert);
    out.serve.set(certPath('subject'), ca.otherSubject.cert);
    out.serve.set(certPath('untrusted'), ca.untrusted.cert);
    emulator = await startEmulator({});
    tp = testPipeline('sns-adversarial', {
      customers: {},
      // Nothing about SNS topics: the defaults a user gets.
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
        METERLINE_REGISTRATION_REDIRECT_URL: 'https://seller.example/onboard',
        METERLINE_HANDOFF_SIGNING_SECRET: 'sns-adversarial-handoff-secret-0123456789',
      },
    });
    const config = tp.config(['registration']);
    expect(config.env.METERLINE_SNS_TOPIC_ARNS).toBeUndefined();
    registration = await startRegistration(config, testLogger(), {
      sns: { roots: [ca.root], get: out.get },
    });
    base = `http://127.0.0.1:${registration.server.port}/marketplace`;
  });
  afterAll(async () => {
    await registration?.stop();
    await emulator?.close();
    if (tp) await deleteKeys(tp.run);
    await new Promise<void>((resolve) => {
      out?.server.closeAllConnections();
      out?.server.close(() => resolve());
    });
    ca?.cleanup();
  });

  const sign = (fields: Fields, key: string, certUrl: string): Fields => {
    const keys =
      fields.Type === 'Notification'
        ? ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
        : ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'];
    const canonical = keys
      .filter((k) => fields[k] !== undefined)
      .map((k) => `${k}\n${fields[k]}\n`)
      .join('');
    const signature = createSign('RSA-SHA256').update(canonical).sign(key, 'base64');
    return { ...fields, SignatureVersion: '2', Signature: signature, SigningCertURL: certUrl };
  };
  const notification = (
    topic: string,
    message: Record<string, string>,
    { key = ca.sns.key, certUrl = `${SNS_HOST}${certPath('good')}`, at = Date.now() } = {},
  ) =>
    sign(
      {
        Type: 'Notification',
        MessageId: `m-${++seq}`,
        TopicArn: topic,
        Message: JSON.stringify(message),
        Timestamp: new Date(at).toISOString(),
      },
      key,
      certUrl,
    );
  const confirmation = (topic: string, token: string) =>
    sign(
      {
        Type: 'SubscriptionConfirmation',
        MessageId: `c-${++seq}`,
        TopicArn: topic,
        Token: token,
        Message: `You have chosen to subscribe to the topic ${topic}.`,
        SubscribeURL: `${SNS_HOST}/?Action=ConfirmSubscription&TopicArn=${topic}&Token=${token}`,
        Timestamp: new Date().toISOString(),
      },
      ca.sns.key,
      `${SNS_HOST}${certPath('good')}`,
    );
  const send = async (m: Fields) => {
    const res = await fetch(`${base}/events`, {
      method: 'POST',
      headers: { 'x-amz-sns-message-type': m.Type ?? 'Notification', 'content-type': 'text/plain' },
      body: JSON.stringify(m),
    });
    return { status: res.status, body: (await res.text()).trim(), headers: res.headers };
  };
  const refusals = async () => {
    const text = await (await fetch(`http://127.0.0.1:${registration?.ops?.port}/metrics`)).text();
    const line = text
      .split('\n')
      .find((l) =>
        l.startsWith(
          'meterline_lifecycle_events_total{source="sns",status="none",outcome="sns_signature_invalid"}',
        ),
      );
    return line === undefined ? 0 : Number(line.split(' ').pop());
  };
  const statusOf = async (tenant: string) =>
    (await registration?.directory.get([tenant]))?.get(tenant)?.status;
  /** meterline_lifecycle_events_total for SNS, summed over the status it carried, for one outcome. */
  const snsCount = async (outcome: string) => {
    const text = await (await fetch(`http://127.0.0.1:${registration?.ops?.port}/metrics`)).text();
    return text
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('meterline_lifecycle_events_total{source="sns",') &&
          l.includes(`,outcome="${outcome}"}`),
      )
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  };

  it('takes the product Marketplace topics; refuses any other topic, S3-style hosts, other subjects and untrusted roots, each before acting and counted', async () => {
    const tenant = 'cust-adv-1';
    await registration?.directory.register(
      tenant,
      { productCode: PRODUCT, customerIdentifier: tenant },
      Date.now() - 60_000,
    );
    const action = (name: string) => ({
      action: name,
      'customer-identifier': tenant,
      'product-code': PRODUCT,
    });
    const refusedBefore = await refusals();

    // The product's own topics: confirmed and read.
    const ok = await send(confirmation(SUBSCRIPTION_TOPIC, 'tok-mp'));
    expect([ok.status, ok.body]).toEqual([200, 'subscription confirmed']);
    expect(out.hits).toEqual([
      certPath('good'),
      `/?Action=ConfirmSubscription&TopicArn=${SUBSCRIPTION_TOPIC}&Token=tok-mp`,
    ]);
    expect((await send(notification(ENTITLEMENT_TOPIC, action('entitlement-updated')))).status).toBe(200);

    // A stranger's topic, correctly signed: never confirmed, never read, and nothing fetched for it.
    const hitsBefore = out.hits.length;
    const foreignConfirmation = await send(confirmation(FOREIGN_TOPIC, 'tok-foreign'));
    expect(foreignConfirmation.status).toBe(403);
    const foreignUnsubscribe = await send(
      notification(FOREIGN_TOPIC, action('unsubscribe-success'), {
        certUrl: `${SNS_HOST}${certPath('fresh')}`,
      }),
    );
    expect(foreignUnsubscribe.status).toBe(403);
    expect(out.hits.slice(hitsBefore)).toEqual([]);
    for (const answer of [foreignConfirmation, foreignUnsubscribe]) {
      expect(answer.body).not.toContain('111122223333');
      expect(answer.headers.get('x-content-type-options')).toBe('nosniff');
    }

    // The certificate: an S3 bucket named "sns" is not SNS, and is never fetched either.
    const s3 = await send(
      notification(SUBSCRIPTION_TOPIC, action('unsubscribe-success'), {
        certUrl: `https://sns.s3.amazonaws.com${certPath('good')}`,
      }),
    );
    expect(s3.status).toBe(403);
    expect(out.hits.slice(hitsBefore)).toEqual([]);
    // Signed by our root but for another name; and named SNS but from no trusted root.
    const otherSubject = await send(
      notification(SUBSCRIPTION_TOPIC, action('unsubscribe-success'), {
        key: ca.otherSubject.key,
        certUrl: `${SNS_HOST}${certPath('subject')}`,
      }),
    );
    expect(otherSubject.status).toBe(403);
    const untrusted = await send(
      notification(SUBSCRIPTION_TOPIC, action('unsubscribe-success'), {
        key: ca.untrusted.key,
        certUrl: `${SNS_HOST}${certPath('untrusted')}`,
      }),
    );
    expect(untrusted.status).toBe(403);
    expect(await statusOf(tenant)).toBe('subscribed');
    expect(await refusals()).toBe(refusedBefore + 5);

    // The product's topic, signed by SNS (our root): applied.
    const real = await send(notification(SUBSCRIPTION_TOPIC, action('unsubscribe-success')));
    expect([real.status, real.body]).toEqual([200, 'applied']);
    expect(await statusOf(tenant)).toBe('unsubscribed');
  });

  it('the same signed Notification posted again is answered 200, counted as replayed, and not applied again', async () => {
    const tenant = 'cust-adv-replay';
    await registration?.directory.register(
      tenant,
      { productCode: PRODUCT, customerIdentifier: tenant },
      Date.now() - 60_000,
    );
    const message = notification(SUBSCRIPTION_TOPIC, {
      action: 'unsubscribe-pending',
      'customer-identifier': tenant,
      'product-code': PRODUCT,
    });
    const first = await send(message);
    expect([first.status, first.body]).toEqual([200, 'applied']);
    const entry = (await registration?.directory.get([tenant]))?.get(tenant);
    expect(entry?.status).toBe('unsubscribe-pending');
    const counts = async () => ({
      applied: await snsCount('applied'),
      stale: await snsCount('stale'),
      replayed: await snsCount('replayed'),
    });
    const before = await counts();

    // SNS delivers again (an answer lost on the way), or someone who captured it posts it again.
    const again = await send(message);
    expect([again.status, again.body]).toEqual([200, 'replayed']);
    expect(await counts()).toEqual({ ...before, replayed: before.replayed + 1 });
    expect((await registration?.directory.get([tenant]))?.get(tenant)).toEqual(entry);
  });

  it('a correctly signed message older than the max age is refused before anything is fetched, and counted', async () => {
    const tenant = 'cust-adv-expired';
    await registration?.directory.register(
      tenant,
      { productCode: PRODUCT, customerIdentifier: tenant },
      Date.now() - 3 * 60 * 60_000,
    );
    // SNS's certificate under a path not fetched yet: the message is valid in every way but its age, and a
    // refusal that fetched anything would show as a hit.
    out.serve.set(certPath('expired'), ca.sns.cert);
    const refusedBefore = await snsCount('sns_message_invalid');
    const hitsBefore = out.hits.length;
    const old = await send(
      notification(
        SUBSCRIPTION_TOPIC,
        { action: 'unsubscribe-success', 'customer-identifier': tenant, 'product-code': PRODUCT },
        { at: Date.now() - 60 * 60_000 - 60_000, certUrl: `${SNS_HOST}${certPath('expired')}` },
      ),
    );
    expect([old.status, old.body]).toEqual([400, 'not a valid SNS message']);
    expect(old.headers.get('x-content-type-options')).toBe('nosniff');
    expect(out.hits.slice(hitsBefore)).toEqual([]);
    expect(await snsCount('sns_message_invalid')).toBe(refusedBefore + 1);
    expect(await statusOf(tenant)).toBe('subscribed');
  });

  it('a valid token posted again after unsubscribe-success or subscribe-fail leaves the buyer as the lifecycle left it', async () => {
    const mint = async (grant: Record<string, string>) => {
      const res = await fetch(`${emulator?.url}/_emulator/registration-tokens`, {
        method: 'POST',
        body: JSON.stringify({ productCode: PRODUCT, ...grant }),
      });
      return ((await res.json()) as { token: string }).token;
    };
    const register = (token: string) =>
      fetch(`${base}/register`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ 'x-amzn-marketplace-token': token }),
      });
    const cases = [
      ['unsubscribe-success', '121212121212', 'unsubscribed'],
      ['subscribe-fail', '131313131313', 'subscribe-failed'],
    ] as const;
    for (const [lifecycle, account, status] of cases) {
      const token = await mint({
        customerAwsAccountId: account,
        licenseArn: `arn:aws:license-manager::${account}:license:l-${account}`,
      });
      expect((await register(token)).status).toBe(303);
      expect(await statusOf(account)).toBe('subscribed');
      const event = await send(
        notification(SUBSCRIPTION_TOPIC, {
          action: lifecycle,
          'customer-aws-account-id': account,
          'product-code': PRODUCT,
        }),
      );
      expect([event.status, event.body]).toEqual([200, 'applied']);
      expect(await statusOf(account)).toBe(status);

      // The same, still valid token: the buyer is told, not sent on, and stays as the lifecycle left it.
      const again = await register(token);
      expect(again.status).toBe(403);
      expect(again.headers.get('location')).toBeNull();
      expect(await again.text()).toContain('not active');
      expect(await statusOf(account)).toBe(status);
    }
  });

  it('every answer carries nosniff and a CSP, and none echoes what was sent', async () => {
    const marker = '<script>alert(1)</script>';
    const answers = [
      await fetch(`${base}/nowhere${encodeURIComponent(marker)}`),
      await fetch(`${base}/register`),
      await fetch(`${base}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ other: marker }),
      }),
      await fetch(`${base}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ 'x-amzn-marketplace-token': marker }),
      }),
      await fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'x-amz-sns-message-type': 'Notification' },
        body: JSON.stringify({ Type: 'Notification', MessageId: marker, TopicArn: marker }),
      }),
      await fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'x-amz-sns-message-type': 'Notification' },
        body: JSON.stringify(
          notification(
            marker,
            { action: 'subscribe-success' },
            { certUrl: `https://${marker}.example/x.pem` },
          ),
        ),
      }),
      await fetch(`${base}/events`, { method: 'POST', body: marker }),
      await fetch(`${base}/events`, { method: 'POST', body: 'x'.repeat(70 * 1024) }),
    ];
    for (const res of answers) {
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.headers.get('x-content-type-options'), res.url).toBe('nosniff');
      expect(res.headers.get('content-security-policy'), res.url).toContain("default-src 'none'");
      const body = await res.text();
      expect(body).not.toContain(marker);
      expect(body).not.toContain('alert(1)');
    }
  });
});
