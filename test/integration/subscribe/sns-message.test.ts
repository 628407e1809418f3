/**
 * SNS message verification against real signatures: RSA keys and X.509 certificates made with the openssl CLI
 * (a test root CA, given to the verifier as its `roots`, issues the SNS certificates), served from a local HTTP
 * server that counts requests, messages signed with node:crypto over the string AWS documents. No services
 * needed.
 */
import { execFileSync } from 'node:child_process';
import { createSign, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MeterlineError } from '../../../src/errors.ts';
import { SNS_CERT_FAILURE_TTL_MS } from '../../../src/subscribe/sns-certificates.ts';
import {
  marketplaceTopicArns,
  type SnsMessage,
  snsStringToSign,
  subscribeUrlAllowed,
} from '../../../src/subscribe/sns-message.ts';
import { SnsVerifier, type SnsVerifierOptions } from '../../../src/subscribe/sns-verifier.ts';
import { certPath, makeTestCa, type TestCa } from '../../support/sns-test-ca.ts';

const TOPIC = 'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-prod123';
const OTHER_TOPIC = 'arn:aws:sns:us-east-1:111122223333:someone-else';
const LOCAL_CERT_URL = /^http:\/\/127\.0\.0\.1:\d+\/[^?#]*\.pem$/;

interface Identity {
  key: string;
  cert: string;
}

let dir: string;
let ca: TestCa;
/** SNS certificates our root issued, and their keys; one self-signed that expired in 2020. */
let good: Identity;
let other: Identity;
let expired: Identity;
/** Our clock for every verifier: after the certificates were made, so they are valid now. */
let NOW: number;

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** `req -x509` cannot back-date (no -not_before before OpenSSL 3.4); `ca -selfsign` takes any dates. */
function expiredSelfSigned(name: string): Identity {
  openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', `${name}.key`]);
  openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
  mkdirSync(join(dir, 'issued'));
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '01\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = back_dated',
      '[back_dated]',
      'database = index.txt',
      'new_certs_dir = issued',
      'serial = serial',
      'default_md = sha256',
      'policy = any_name',
      '[any_name]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  openssl(
    [
      'ca',
      '-batch',
      '-config',
      'ca.cnf',
      '-selfsign',
      '-keyfile',
      `${name}.key`,
      '-in',
      `${name}.csr`,
    ].concat([
      '-out',
      `${name}.pem`,
      '-notext',
      '-startdate',
      '20200101000000Z',
      '-enddate',
      '20200102000000Z',
    ]),
  );
  return {
    key: readFileSync(join(dir, `${name}.key`), 'utf8'),
    cert: readFileSync(join(dir, `${name}.pem`), 'utf8'),
  };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'meterline-sns-'));
  ca = makeTestCa('sns-message');
  good = ca.sns;
  other = ca.issue('other', 'sns.amazonaws.com');
  expired = expiredSelfSigned('expired');
  NOW = Date.now() + 1_000;
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  ca?.cleanup();
});

/** A certificate server: serves PEM text by path, counts every request, can be made to fail. */
interface CertServer {
  url(path: string): string;
  requests(path?: string): number;
  serve(path: string, pem: string): void;
  failWith(status: number | undefined): void;
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

async function certServer(files: Record<string, string> = {}): Promise<CertServer> {
  const served = new Map(Object.entries(files));
  const counts = new Map<string, number>();
  let failing: number | undefined;
  const server = createServer((req, res) => {
    const path = req.url ?? '';
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const pem = served.get(path);
    if (failing !== undefined) res.writeHead(failing).end('failing on purpose');
    else if (pem === undefined) res.writeHead(404).end('not found');
    else res.writeHead(200, { 'content-type': 'application/x-pem-file' }).end(pem);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    requests: (path) =>
      path === undefined ? [...counts.values()].reduce((a, b) => a + b, 0) : (counts.get(path) ?? 0),
    serve: (path, pem) => served.set(path, pem),
    failWith: (status) => {
      failing = status;
    },
  };
}

/** The string to sign, written out from AWS's documentation rather than taken from the code under test. */
function canonical(m: Record<string, string | undefined>): string {
  const keys =
    m.Type === 'Notification'
      ? ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
      : ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'];
  return keys
    .filter((k) => m[k] !== undefined)
    .map((k) => `${k}\n${m[k]}\n`)
    .join('');
}

type Fields = Record<string, string | undefined>;

function sign(fields: Fields, key: string, version: '1' | '2'): string {
  const signer = createSign(version === '1' ? 'RSA-SHA1' : 'RSA-SHA256');
  signer.update(canonical(fields), 'utf8');
  return signer.sign(key, 'base64');
}

let seq = 0;
const iso = (ms: number) => new Date(ms).toISOString();

/** A Marketplace subscription notification as SNS delivers it, signed with `key`. */
function notification(
  certUrl: string,
  key: string,
  { version = '1', subject, ...overrides }: { version?: '1' | '2'; subject?: string } & Fields = {},
): Fields {
  const fields: Fields = {
    Type: 'Notification',
    MessageId: `msg-${++seq}`,
    TopicArn: TOPIC,
    ...(subject === undefined ? {} : { Subject: subject }),
    Message: JSON.stringify({
      action: 'unsubscribe-pending',
      'customer-identifier': 'cust-SECRETMARKER',
      'product-code': 'prod-x',
    }),
    Timestamp: iso(NOW - 2_000),
    UnsubscribeURL: `https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=${TOPIC}:sub`,
    ...overrides,
  };
  return {
    ...fields,
    SignatureVersion: version,
    Signature: sign(fields, key, version),
    SigningCertURL: certUrl,
  };
}

function confirmation(
  certUrl: string,
  key: string,
  type = 'SubscriptionConfirmation',
  version: '1' | '2' = '1',
): Fields {
  const fields: Fields = {
    Type: type,
    MessageId: `msg-${++seq}`,
    Token: '2336412f37fb687f5d51e6e2425dacbba7cd1f2d3c7f9d1a',
    TopicArn: TOPIC,
    Message: `You have chosen to subscribe to the topic ${TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message.`,
    SubscribeURL: `https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=${TOPIC}&Token=2336412f`,
    Timestamp: iso(NOW - 2_000),
  };
  return {
    ...fields,
    SignatureVersion: version,
    Signature: sign(fields, key, version),
    SigningCertURL: certUrl,
  };
}

const body = (fields: Fields) => JSON.stringify(fields);

/** Our local certificate URLs, our root, our topic; each test overrides what it is about. */
function verifier(options: Partial<SnsVerifierOptions> = {}): SnsVerifier {
  return new SnsVerifier({
    certUrlPattern: LOCAL_CERT_URL,
    now: () => NOW,
    topicArns: [TOPIC],
    roots: [ca.root],
    ...options,
  });
}

async function rejection(promise: Promise<unknown>): Promise<MeterlineError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(MeterlineError);
    return error as MeterlineError;
  }
  throw new Error('expected the message to be refused');
}

/** A fetchText that must never be called. */
function noFetch(): { fetchText: (url: string) => Promise<string>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    fetchText: async (url) => {
      calls.push(url);
      throw new Error('nothing may be fetched');
    },
  };
}

describe('SNS message verification: valid messages', () => {
  it('verifies Notifications signed with SignatureVersion 1 and 2, with and without Subject', async () => {
    const server = await certServer({ '/SimpleNotificationService-good.pem': good.cert });
    const url = server.url('/SimpleNotificationService-good.pem');
    const v = verifier({ topicArns: [TOPIC] });

    for (const [version, subject] of [
      ['1', undefined],
      ['1', 'Subscription change'],
      ['2', undefined],
      ['2', 'Subscription change'],
    ] as const) {
      const sent = notification(url, good.key, { version, subject });
      const got = await v.verify(body(sent));
      expect(got).toEqual(sent);
      expect('Subject' in got).toBe(subject !== undefined);
      expect(JSON.parse(got.Message).action).toBe('unsubscribe-pending');
    }
  });

  it('verifies SubscriptionConfirmation and UnsubscribeConfirmation, whose SubscribeURL may be confirmed', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const v = verifier();
    const sub = confirmation(server.url('/c.pem'), good.key);
    const got = await v.verify(body(sub));
    expect(got.Type).toBe('SubscriptionConfirmation');
    expect(got.Token).toBe(sub.Token);
    expect(subscribeUrlAllowed(got.SubscribeURL ?? '')).toBe(true);

    const unsub = await v.verify(
      body(confirmation(server.url('/c.pem'), good.key, 'UnsubscribeConfirmation', '2')),
    );
    expect(unsub.Type).toBe('UnsubscribeConfirmation');
  });

  it('returns only the documented fields, whatever else the body holds', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const got = await verifier().verify(
      body({ ...notification(server.url('/c.pem'), good.key), Extra: 'x' }),
    );
    expect(got).not.toHaveProperty('Extra');
  });

  it('signs the string exactly as AWS documents it', () => {
    const base = {
      MessageId: 'id-1',
      TopicArn: 'arn:t',
      Message: 'hello\nworld',
      Timestamp: '2026-01-01T00:00:00.000Z',
      SignatureVersion: '1',
      Signature: 'c2ln',
      SigningCertURL: 'https://sns.us-east-1.amazonaws.com/x.pem',
    } as const;
    const n: SnsMessage = { ...base, Type: 'Notification', Subject: 'S', UnsubscribeURL: 'https://u' };
    expect(snsStringToSign(n)).toBe(
      'Message\nhello\nworld\nMessageId\nid-1\nSubject\nS\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n',
    );
    const { Subject: _, ...withoutSubject } = n;
    expect(snsStringToSign(withoutSubject)).toBe(
      'Message\nhello\nworld\nMessageId\nid-1\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n',
    );
    const c: SnsMessage = {
      ...base,
      Type: 'SubscriptionConfirmation',
      SubscribeURL: 'https://s',
      Token: 'tok',
    };
    expect(snsStringToSign(c)).toBe(
      'Message\nhello\nworld\nMessageId\nid-1\nSubscribeURL\nhttps://s\nTimestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn:t\nType\nSubscriptionConfirmation\n',
    );
  });
});

describe('SNS message verification: forged messages', () => {
  it('refuses a tampered message: Message, Subject, a Subject added, the signature version switched', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const v = verifier();
    const url = server.url('/c.pem');
    const sent = notification(url, good.key, { subject: 'S' });
    const forgeries: Fields[] = [
      { ...sent, Message: sent.Message?.replace('unsubscribe-pending', 'subscribe-success') },
      { ...sent, Subject: 'T' },
      { ...notification(url, good.key), Subject: 'added later' },
      { ...sent, SignatureVersion: '2' },
      { ...confirmation(url, good.key), SubscribeURL: 'https://sns.us-east-1.amazonaws.com/?Action=Other' },
    ];
    for (const forged of forgeries) {
      const error = await rejection(v.verify(body(forged)));
      expect(error.code).toBe('sns_signature_invalid');
      expect(error.retriable).toBe(false);
      expect(error.message).toMatch(/signature .* does not match/);
      expect(error.message).not.toContain('SECRETMARKER');
    }
  });

  it('refuses a message signed with another key than the certificate it names', async () => {
    const server = await certServer({ '/good.pem': good.cert, '/other.pem': other.cert });
    const v = verifier();
    const error = await rejection(v.verify(body(notification(server.url('/good.pem'), other.key))));
    expect(error.code).toBe('sns_signature_invalid');
    // The same key with its own certificate passes: it is the pairing that was wrong.
    await v.verify(body(notification(server.url('/other.pem'), other.key, { version: '2' })));
  });

  it('the default pattern refuses our local certificate URL without fetching it', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const v = new SnsVerifier({ now: () => NOW, topicArns: [TOPIC] });
    const error = await rejection(v.verify(body(notification(server.url('/c.pem'), good.key))));
    expect(error.code).toBe('sns_signature_invalid');
    expect(error.message).toContain('SigningCertURL');
    expect(server.requests()).toBe(0);
  });

  it('the default pattern refuses http, a query string, other, look-alike and S3 hosts, other paths, before any fetch', async () => {
    const spy = noFetch();
    const v = new SnsVerifier({ now: () => NOW, fetchText: spy.fetchText, topicArns: [TOPIC] });
    const pem = certPath('abc');
    for (const url of [
      // S3 virtual hosts: buckets called "sns", which anyone can create.
      `https://sns.s3.amazonaws.com${pem}`,
      `https://sns.s3-website.amazonaws.com${pem}`,
      `https://sns.s3.us-east-1.amazonaws.com${pem}`,
      `https://sns.s3-us-west-2.amazonaws.com${pem}`,
      'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem',
      `https://sns.us-east-1.amazonaws.com/other${pem}`,
      'http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem',
      'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=.pem',
      'https://sns.us-east-1.amazonaws.com/?Action=Get&x=SimpleNotificationService-abc.pem',
      'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#.pem',
      'https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem',
      'https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-abc.pem',
      'https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem',
      'https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem',
      'https://s3.amazonaws.com/SimpleNotificationService-abc.pem',
      'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt',
    ]) {
      const error = await rejection(v.verify(body(notification(url, good.key))));
      expect(error.code, url).toBe('sns_signature_invalid');
      expect(error.message).toContain('SigningCertURL');
    }
    expect(spy.calls).toEqual([]);

    // AWS's own URLs pass the pattern (and only then reach the fetch): commercial, China, GovCloud.
    for (const url of [
      'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem',
      `https://sns.cn-north-1.amazonaws.com.cn${pem}`,
      `https://sns.us-gov-west-1.amazonaws.com${pem}`,
      `https://sns.ap-southeast-5.amazonaws.com${pem}`,
    ]) {
      const error = await rejection(v.verify(body(notification(url, good.key))));
      expect(error.code).toBe('sns_cert_unavailable');
    }
    expect(spy.calls).toHaveLength(4);
  });

  it('refuses a topic outside the allow-list, before any fetch', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const v = verifier({ topicArns: [TOPIC] });
    const error = await rejection(
      v.verify(body(notification(server.url('/c.pem'), good.key, { TopicArn: OTHER_TOPIC }))),
    );
    expect(error.code).toBe('sns_signature_invalid');
    expect(error.message).toContain(OTHER_TOPIC);
    expect(server.requests()).toBe(0);
    // A confirmation from that topic is refused the same way: never confirmed, nothing fetched.
    const confirmError = await rejection(
      v.verify(body({ ...confirmation(server.url('/c.pem'), good.key), TopicArn: OTHER_TOPIC })),
    );
    expect(confirmError.code).toBe('sns_signature_invalid');
    expect(server.requests()).toBe(0);
    // Any topic only when asked for by name: '*'.
    await verifier({ topicArns: '*' }).verify(
      body(notification(server.url('/c.pem'), good.key, { TopicArn: OTHER_TOPIC })),
    );
  });

  it("AWS Marketplace's default topics are a product's subscription and entitlement topics in us-east-1", () => {
    expect(marketplaceTopicArns(['p1', 'p2'])).toEqual([
      'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-p1',
      'arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-p1',
      'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-p2',
      'arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-p2',
    ]);
  });

  it('refuses a certificate issued to another subject, or chaining to no trusted root', async () => {
    const untrustedRoot = ca.issue('lookalike', 'sns.amazonaws.com', { issuer: ca.untrusted });
    const twoNames = ca.issue('two-names', 'sns.amazonaws.com/CN=attacker.example');
    const server = await certServer({
      '/subject.pem': ca.otherSubject.cert,
      '/self.pem': ca.untrusted.cert,
      '/lookalike.pem': untrustedRoot.cert,
      '/two.pem': twoNames.cert,
      '/good.pem': good.cert,
    });
    const cases: [string, string, RegExp][] = [
      ['/subject.pem', ca.otherSubject.key, /not issued to SNS/],
      ['/two.pem', twoNames.key, /not issued to SNS/],
      ['/self.pem', ca.untrusted.key, /does not chain to a trusted root/],
      ['/lookalike.pem', untrustedRoot.key, /does not chain to a trusted root/],
    ];
    for (const [path, key, reason] of cases) {
      const error = await rejection(verifier().verify(body(notification(server.url(path), key))));
      expect(error.code, path).toBe('sns_signature_invalid');
      expect(error.message).toMatch(reason);
    }
    // Node's own store (no roots given) does not hold our test root either.
    const error = await rejection(
      new SnsVerifier({ certUrlPattern: LOCAL_CERT_URL, now: () => NOW, topicArns: [TOPIC] }).verify(
        body(notification(server.url('/good.pem'), good.key)),
      ),
    );
    expect(error.message).toMatch(/does not chain to a trusted root/);
  });

  it('follows an intermediate served with the certificate, or named by its AIA on Amazon Trust Services only', async () => {
    const intermediate = ca.issue('intermediate', 'meterline test intermediate', { ca: true });
    const leaf = ca.issue('via-intermediate', 'sns.amazonaws.com', { issuer: intermediate });
    const server = await certServer({
      '/bundle.pem': `${leaf.cert}${intermediate.cert}`,
      '/leaf.pem': leaf.cert,
    });
    // These certificates were made after NOW: a clock just past them.
    const later = () => Date.now() + 1_000;
    await verifier({ now: later }).verify(body(notification(server.url('/bundle.pem'), leaf.key)));
    // Alone, the leaf does not reach the root: it names no issuer URL.
    const alone = await rejection(
      verifier({ now: later }).verify(body(notification(server.url('/leaf.pem'), leaf.key))),
    );
    expect(alone.message).toMatch(/does not chain/);
    // A leaf whose AIA names Amazon Trust Services: its issuer is fetched (once) and must chain itself.
    const aia = ca.issue('aia', 'sns.amazonaws.com', {
      issuer: intermediate,
      aia: 'http://crt.test1.amazontrust.com/t1.cer',
    });
    const evil = ca.issue('aia-evil', 'sns.amazonaws.com', {
      issuer: intermediate,
      aia: 'http://127.0.0.1:1/t1.cer',
    });
    server.serve('/aia.pem', aia.cert);
    server.serve('/evil.pem', evil.cert);
    const fetchedIssuers: string[] = [];
    const der = new X509Certificate(intermediate.cert).raw;
    const v = verifier({
      now: later,
      fetchBytes: async (url) => {
        fetchedIssuers.push(url);
        return new Uint8Array(der);
      },
    });
    await v.verify(body(notification(server.url('/aia.pem'), aia.key)));
    await v.verify(body(notification(server.url('/aia.pem'), aia.key, { version: '2' })));
    const refused = await rejection(v.verify(body(notification(server.url('/evil.pem'), evil.key))));
    expect(refused.message).toMatch(/does not chain/);
    expect(fetchedIssuers).toEqual(['http://crt.test1.amazontrust.com/t1.cer']);
  });

  it('refuses a certificate that has expired, and a cached one once it expires', async () => {
    const server = await certServer({ '/expired.pem': expired.cert, '/good.pem': good.cert });
    const error = await rejection(
      verifier().verify(body(notification(server.url('/expired.pem'), expired.key))),
    );
    // Self-signed as well as expired: refused either way.
    expect(error.code).toBe('sns_signature_invalid');

    // The good certificate, fetched and cached, is checked against the clock on every message.
    let now = NOW;
    const v = verifier({ now: () => now });
    await v.verify(body(notification(server.url('/good.pem'), good.key)));
    now = NOW + 10 * 86_400_000;
    const late = await rejection(
      v.verify(body(notification(server.url('/good.pem'), good.key, { Timestamp: iso(now - 1_000) }))),
    );
    expect(late.code).toBe('sns_signature_invalid');
    expect(late.message).toContain('not valid now');
    expect(server.requests('/good.pem')).toBe(1);
  });

  it('refuses a certificate URL that serves something other than a certificate', async () => {
    const server = await certServer({ '/junk.pem': 'not a certificate' });
    const error = await rejection(verifier().verify(body(notification(server.url('/junk.pem'), good.key))));
    expect(error.code).toBe('sns_signature_invalid');
    expect(error.message).toContain('not a PEM certificate');
  });
});

describe('SNS message verification: malformed and stale messages', () => {
  it('refuses messages older than maxAgeMs or more than 5 minutes ahead, before any fetch', async () => {
    const spy = noFetch();
    const v = verifier({ fetchText: spy.fetchText, maxAgeMs: 10 * 60_000 });
    for (const at of [NOW - 10 * 60_000 - 1, NOW - 86_400_000, NOW + 5 * 60_000 + 1, NOW + 86_400_000]) {
      const error = await rejection(
        v.verify(body(notification('http://127.0.0.1:1/c.pem', good.key, { Timestamp: iso(at) }))),
      );
      expect(error.code).toBe('sns_message_invalid');
      expect(error.retriable).toBe(false);
      expect(error.message).toMatch(/older than|in the future/);
    }
    expect(spy.calls).toEqual([]);

    // Inside the window, the message goes on to the certificate.
    const server = await certServer({ '/c.pem': good.cert });
    for (const at of [NOW - 10 * 60_000 + 1_000, NOW + 4 * 60_000]) {
      await verifier({ maxAgeMs: 10 * 60_000 }).verify(
        body(notification(server.url('/c.pem'), good.key, { Timestamp: iso(at) })),
      );
    }
  });

  it('the default maxAgeMs is one hour', async () => {
    const v = verifier({ fetchText: noFetch().fetchText });
    const error = await rejection(
      v.verify(body(notification('http://127.0.0.1:1/c.pem', good.key, { Timestamp: iso(NOW - 3_600_001) }))),
    );
    expect(error.code).toBe('sns_message_invalid');
  });

  it('refuses bad JSON, non-objects, missing or mistyped fields, an unknown Type, and says what was wrong', async () => {
    const spy = noFetch();
    const v = verifier({ fetchText: spy.fetchText });
    const valid = notification('http://127.0.0.1:1/c.pem', good.key);
    const { MessageId: _m, Signature: _s, ...withoutTwo } = valid;
    const { Token: _t, ...confirmationWithoutToken } = confirmation('http://127.0.0.1:1/c.pem', good.key);
    const cases: [string, RegExp][] = [
      ['{"Type": "Notification", SECRETMARKER', /not JSON \(37 chars, broken at position 25\)/],
      // V8's own message would quote this input.
      ['SECRETMARKER, then more', /not JSON/],
      ['', /not JSON/],
      ['null', /must be a JSON object, got null/],
      ['[1, 2]', /must be a JSON object, got an array/],
      ['"SECRETMARKER"', /must be a JSON object, got string/],
      [body(withoutTwo), /MessageId is missing; Signature is missing/],
      [body(confirmationWithoutToken), /Token is missing/],
      [body({ ...valid, Type: 'Bogus' }), /unknown Type "Bogus"/],
      [body({ ...valid, SignatureVersion: '3' }), /SignatureVersion must be "1" or "2"/],
      [JSON.stringify({ ...valid, Timestamp: 1767225600000 }), /Timestamp must be a string, got number/],
      [body({ ...valid, Timestamp: '2026-01-01 00:00:00' }), /Timestamp .* is not an ISO 8601 time/],
      [body({ ...valid, Signature: 'not base64!' }), /Signature is not base64/],
      [JSON.stringify({ ...valid, Subject: 7 }), /Subject must be a string/],
      [JSON.stringify({ ...valid, TopicArn: '' }), /TopicArn is empty/],
    ];
    for (const [input, expected] of cases) {
      const error = await rejection(v.verify(input));
      expect(error.code, input).toBe('sns_message_invalid');
      expect(error.retriable).toBe(false);
      expect(error.message).toMatch(expected);
      expect(error.message).not.toContain('SECRETMARKER');
    }
    expect(spy.calls).toEqual([]);
  });

  it('checks its options', () => {
    expect(() => new SnsVerifier({ maxAgeMs: 0, topicArns: [TOPIC] })).toThrow(
      'maxAgeMs must be greater than 0',
    );
    expect(() => new SnsVerifier({ topicArns: [''] })).toThrow('topicArns must be non-empty strings');
    // No open default: an empty list is refused, not read as "any topic".
    expect(() => new SnsVerifier({ topicArns: [] })).toThrow("or be '*' for any topic");
    expect(() => new SnsVerifier({} as SnsVerifierOptions)).toThrow("or be '*' for any topic");
  });
});

describe('SNS message verification: fetching certificates', () => {
  it('an unreachable certificate is retriable, its failure remembered for a minute: the retry after that succeeds', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    let clock = NOW;
    const v = verifier({ now: () => clock });
    const message = body(notification(server.url('/c.pem'), good.key));
    server.failWith(500);
    const error = await rejection(v.verify(message));
    expect(error.code).toBe('sns_cert_unavailable');
    expect(error.retriable).toBe(true);
    expect(error.message).toContain('HTTP 500');
    expect(error.context).toMatchObject({ certUrl: server.url('/c.pem'), topicArn: TOPIC });

    server.failWith(undefined);
    // Within the failure's minute the answer comes from memory: no fetch.
    clock = NOW + SNS_CERT_FAILURE_TTL_MS - 1;
    expect((await rejection(v.verify(message))).code).toBe('sns_cert_unavailable');
    expect(server.requests('/c.pem')).toBe(1);
    clock = NOW + SNS_CERT_FAILURE_TTL_MS;
    await expect(v.verify(message)).resolves.toMatchObject({ TopicArn: TOPIC });
    expect(server.requests('/c.pem')).toBe(2);
  });

  it('a thrown fetchText is retriable too', async () => {
    const v = verifier({
      fetchText: async () => {
        throw new Error('connect ECONNREFUSED');
      },
    });
    const error = await rejection(v.verify(body(notification('http://127.0.0.1:1/c.pem', good.key))));
    expect(error.code).toBe('sns_cert_unavailable');
    expect(error.retriable).toBe(true);
    expect(error.message).toContain('ECONNREFUSED');
  });

  it('fetches a certificate once for many messages, in sequence or in a burst', async () => {
    const server = await certServer({ '/c.pem': good.cert });
    const v = verifier();
    await v.verify(body(notification(server.url('/c.pem'), good.key)));
    await v.verify(body(confirmation(server.url('/c.pem'), good.key)));
    expect(server.requests('/c.pem')).toBe(1);

    const burst = verifier();
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        burst.verify(body(notification(server.url('/c.pem'), good.key, { version: i % 2 ? '1' : '2' }))),
      ),
    );
    expect(server.requests('/c.pem')).toBe(2);
  });

  it('keeps at most 16 certificates, dropping the one unused the longest', async () => {
    const server = await certServer();
    const paths = Array.from({ length: 17 }, (_, i) => `/cert-${i}.pem`);
    for (const path of paths) server.serve(path, good.cert);
    const v = verifier({ certFetchesPerMinute: 100 });
    const verifyAt = (path: string) => v.verify(body(notification(server.url(path), good.key)));
    for (const path of paths.slice(0, 16)) await verifyAt(path);
    // cert-0 is used again, so cert-1 is now the one unused the longest, and the 17th drops it.
    await verifyAt('/cert-0.pem');
    await verifyAt('/cert-16.pem');
    await verifyAt('/cert-0.pem');
    await verifyAt('/cert-1.pem');
    expect(server.requests('/cert-0.pem')).toBe(1);
    expect(server.requests('/cert-1.pem')).toBe(2);
    expect(server.requests()).toBe(18);
  });
});

describe('subscribeUrlAllowed', () => {
  it('accepts https SNS endpoints only', () => {
    for (const url of [
      'https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:t&Token=abc',
      'https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription&Token=abc',
      'https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=abc',
      'https://sns.us-east-1.amazonaws.com:443/?Action=ConfirmSubscription',
    ]) {
      expect(subscribeUrlAllowed(url), url).toBe(true);
    }
    for (const url of [
      'http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription',
      'https://sns.us-east-1.amazonaws.com.evil.example/?Action=ConfirmSubscription',
      'https://sns.us-east-1.amazonaws.com@evil.example/?Action=ConfirmSubscription',
      'https://user:pw@sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription',
      'https://sns.us-east-1.amazonaws.com:8443/?Action=ConfirmSubscription',
      'https://evil.example/?next=https://sns.us-east-1.amazonaws.com/',
      'https://sqs.us-east-1.amazonaws.com/?Action=ConfirmSubscription',
      'https://amazonaws.com/',
      'ftp://sns.us-east-1.amazonaws.com/',
      'not a url',
      '',
    ]) {
      expect(subscribeUrlAllowed(url), url).toBe(false);
    }
  });

  it('takes another host pattern, still https only and matched against the whole host', () => {
    const local = /^sns\.test\.internal$/g;
    expect(subscribeUrlAllowed('https://sns.test.internal/?Action=ConfirmSubscription', local)).toBe(true);
    // A global pattern's lastIndex must not change the next answer.
    expect(subscribeUrlAllowed('https://sns.test.internal/?Action=ConfirmSubscription', local)).toBe(true);
    expect(subscribeUrlAllowed('http://sns.test.internal/', local)).toBe(false);
    expect(subscribeUrlAllowed('https://sns.us-east-1.amazonaws.com/', local)).toBe(false);
  });
});
