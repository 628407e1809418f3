/**
 * The subscription flow on the real stack: a buyer's registration token goes through the registration URL
 * (ResolveCustomer on the emulator), the tenant lands in the customer directory in Redis, and the pipeline
 * bills its usage with the identity ResolveCustomer gave, with no customers file entry. Lifecycle events
 * change who gets hourly zero records; forged or stale ones change nothing.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import type { CustomerDirectory } from '../../../src/state/customer-directory.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { startRegistrationServer } from '../../../src/subscribe/registration-server.ts';
import { HOUR_MS, hourIso, hourStart } from '../../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();
const exec = promisify(execFile);
const MAIN = new URL('../../../src/cli/main.ts', import.meta.url).pathname;
const API_KEY = 'k3y-for-eventbridge-destinations-0123';
const buyer = {
  customerAwsAccountId: '555555555555',
  licenseArn: 'arn:aws:license-manager::555555555555:license:l-e5',
};
const idle = {
  customerAwsAccountId: '666666666666',
  licenseArn: 'arn:aws:license-manager::666666666666:license:l-f6',
};
const leaving = {
  customerAwsAccountId: '777777777777',
  licenseArn: 'arn:aws:license-manager::777777777777:license:l-g7',
};

describe('registration and subscription lifecycle', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let registration: RunningRegistration | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await registration?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('registers buyers through ResolveCustomer and bills them from the directory', async () => {
    emulator = await startEmulator({});
    tp = testPipeline('registration', {
      partitions: 3,
      dimensions: [{ name: 'api_calls', zeroRecords: true }],
      // No customers file entries: every mapping comes from registration.
      customers: {},
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
        METERLINE_REGISTRATION_REDIRECT_URL: 'https://seller.example/onboard?from=aws',
        METERLINE_EVENTS_API_KEY: API_KEY,
        METERLINE_HANDOFF_SIGNING_SECRET: 'registration-test-handoff-secret-0123456789',
      },
    });
    registration = await startRegistration(tp.config(['registration']), testLogger());
    const base = `http://127.0.0.1:${registration.server.port}/marketplace`;
    const mint = async (grant: Record<string, unknown>) => {
      const res = await fetch(`${emulator?.url}/_emulator/registration-tokens`, {
        method: 'POST',
        body: JSON.stringify({ productCode: 'prod-test', ...grant }),
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { token: string }).token;
    };
    const post = (token: string | undefined) =>
      fetch(`${base}/register`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: token === undefined ? 'other=1' : new URLSearchParams({ 'x-amzn-marketplace-token': token }),
      });

    // The buyer's browser posts the token and is sent on to the seller's onboarding page.
    const ok = await post(await mint(buyer));
    expect(ok.status).toBe(303);
    // With a signed hand-off token only (test/integration/subscribe/handoff.test.ts): never the bare account id.
    expect(ok.headers.get('location')).toMatch(
      /^https:\/\/seller\.example\/onboard\?from=aws&handoff_token=[\w-]+\.[\w-]+\.[\w-]+$/,
    );
    const [entry] = [...(await registration.directory.get(['555555555555'])).values()];
    expect(entry).toMatchObject({
      tenant: '555555555555',
      ...buyer,
      productCode: 'prod-test',
      status: 'subscribed',
    });

    // Every refusal is an explanation for the buyer, never a stored mapping.
    const refusals = [
      [await post(await mint({ ...buyer, ttlSeconds: -1 })), 400, 'Registration link expired'],
      [await post('not-a-token-aws-issued'), 400, 'Registration link expired'],
      [
        await post(await mint({ productCode: 'prod-other', customerAwsAccountId: '888888888888' })),
        400,
        'Unknown product',
      ],
      [await post(undefined), 400, 'Registration link incomplete'],
      [await fetch(`${base}/register`), 405, 'takes POST'],
    ] as const;
    for (const [res, status, text] of refusals) {
      expect(res.status).toBe(status);
      expect(await res.text()).toContain(text);
    }
    expect(await registration.directory.get(['888888888888'])).toEqual(new Map());

    // Two more buyers, registered two hours ago (the directory is what the registration URL writes).
    const now = Date.now();
    const since = hourStart(now) - 2 * HOUR_MS;
    await mint(idle);
    await mint(leaving);
    await registration.directory.register('666666666666', { productCode: 'prod-test', ...idle }, since);
    await registration.directory.register('777777777777', { productCode: 'prod-test', ...leaving }, since);

    // Lifecycle events: the key is required, a forged SNS message is refused before any fetch, an event
    // for a stranger changes nothing, and an event older than the state is ignored.
    const event = (
      detailType: string,
      accountId: string,
      timeMs: number,
      key = API_KEY,
      status = 'TERMINATED',
    ) =>
      fetch(`${base}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-meterline-api-key': key },
        body: JSON.stringify({
          source: 'aws.agreement-marketplace',
          'detail-type': detailType,
          time: new Date(timeMs).toISOString(),
          detail: {
            agreement: { id: 'agmt-1', status, acceptor: { accountId } },
            product: { code: 'prod-test' },
          },
        }),
      });
    const answers = [
      [
        await event('License Deprovisioned - Manager', '777777777777', now, 'wrong-key'),
        401,
        'x-meterline-api-key',
      ],
      [await event('License Deprovisioned - Manager', '999999999999', now), 200, 'unknown_customer'],
      [await event('Purchase Agreement Ended - Manager', '666666666666', since - HOUR_MS), 200, 'stale'],
      [await event('License Deprovisioned - Manager', '777777777777', now), 200, 'applied'],
      // A renewal ends the old agreement and creates a new one: not an unsubscription.
      [
        await event('Purchase Agreement Ended - Manager', '666666666666', now, API_KEY, 'RENEWED'),
        200,
        'ignored',
      ],
      [await event('Purchase Agreement Ended - Manager', '666666666666', now), 200, 'applied'],
    ] as const;
    for (const [res, status, text] of answers) {
      expect(res.status).toBe(status);
      expect(await res.text()).toContain(text);
    }
    const forged = await fetch(`${base}/events`, {
      method: 'POST',
      headers: { 'x-amz-sns-message-type': 'Notification' },
      body: JSON.stringify({
        Type: 'Notification',
        MessageId: 'm-1',
        TopicArn: 'arn:aws:sns:us-east-1:123456789012:aws-mp-subscription-notification-prod',
        Message: JSON.stringify({
          action: 'unsubscribe-success',
          'customer-aws-account-id': '555555555555',
          'product-code': 'prod-test',
        }),
        Timestamp: new Date().toISOString(),
        SignatureVersion: '1',
        Signature: Buffer.from('forged').toString('base64'),
        SigningCertURL: 'https://attacker.example/SimpleNotificationService.pem',
      }),
    });
    expect(forged.status).toBe(403);
    const statuses = await registration.directory.get(['555555555555', '666666666666', '777777777777']);
    expect(Object.fromEntries([...statuses].map(([t, e]) => [t, e.status]))).toEqual({
      '555555555555': 'subscribed',
      '666666666666': 'unsubscribed',
      '777777777777': 'unsubscribed',
    });
    // The idle buyer buys again: a new agreement.
    expect((await event('Purchase Agreement Created - Manager', '666666666666', now + 1)).status).toBe(200);
    expect((await registration.directory.get(['666666666666'])).get('666666666666')?.status).toBe(
      'subscribed',
    );

    // The registered buyer's usage in the last two closed hours is billed under its AWS identity; the idle
    // one gets a 0 for each closed hour since it subscribed; the one that left gets nothing.
    const events = [
      ...syntheticEvents({
        count: 300,
        customers: ['555555555555'],
        dimensions: ['api_calls'],
        hours: 2,
        nowMs: now,
        duplicateRate: 0,
        seed: 11,
        idPrefix: tp.run,
      }),
    ];
    const expected = new Map<string, number>();
    for (const e of events) {
      const key = `555555555555|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
      expected.set(key, (expected.get(key) ?? 0) + e.quantity);
    }
    for (const h of [since, since + HOUR_MS]) expected.set(`666666666666|${hourIso(h)}`, 0);
    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });
    const records = () => emulator?.state.snapshot().records ?? [];
    await waitFor(() => (records().length >= expected.size ? true : undefined), {
      timeoutMs: 90_000,
      describe: () => `${records().length} of ${expected.size} records accepted`,
    });
    expect(new Map(records().map((r) => [`${r.customer}|${r.timestamp}`, r.quantity]))).toEqual(expected);
    expect(records()).toHaveLength(expected.size);
    expect(
      records().every((r) => r.licenseArn === (r.customer === '555555555555' ? buyer : idle).licenseArn),
    ).toBe(true);
    expect(emulator.state.snapshot().duplicates).toBe(0);

    // The operator's view: `meterline customers` lists the directory (no Kafka needed), filtered by status.
    const env = { ...process.env, ...tp.env, KAFKA_BROKERS: '' };
    const listed = JSON.parse(
      (await exec(process.execPath, [MAIN, 'customers', '--json'], { env })).stdout,
    ) as {
      tenant: string;
      source: string;
      status: string;
    }[];
    expect(listed.map((r) => [r.tenant, r.source, r.status])).toEqual([
      ['555555555555', 'registration', 'subscribed'],
      ['666666666666', 'registration', 'subscribed'],
      ['777777777777', 'registration', 'unsubscribed'],
    ]);
    const gone = JSON.parse(
      (await exec(process.execPath, [MAIN, 'customers', '--json', '--status', 'unsubscribed'], { env }))
        .stdout,
    ) as { tenant: string }[];
    expect(gone.map((r) => r.tenant)).toEqual(['777777777777']);

    const metricsText = await (await fetch(`http://127.0.0.1:${registration.ops?.port}/metrics`)).text();
    expect(metricsText).toMatch(/^meterline_registrations_total\{outcome="registered"\} 1$/m);
    expect(metricsText).toMatch(/^meterline_registrations_total\{outcome="registration_token_expired"\} 1$/m);
    expect(metricsText).toMatch(
      /^meterline_lifecycle_events_total\{source="sns",status="none",outcome="sns_signature_invalid"\} 1$/m,
    );
    // The fleet alerts see the role by its build info.
    expect(metricsText).toMatch(/^meterline_build_info\{[^}]*role="registration"[^}]*\} 1$/m);
  });

  it('asks the buyer to retry when the directory cannot store the registration', async () => {
    const server = await startRegistrationServer({
      port: 0,
      host: '127.0.0.1',
      // Redis down: the directory's write fails after ResolveCustomer succeeded.
      directory: {
        register: async () => {
          throw new Error('connect ECONNREFUSED');
        },
      } as unknown as CustomerDirectory,
      resolve: async () => ({ productCode: 'prod-test', ...buyer }),
      productCodes: new Set(['prod-test']),
      sns: { verify: async () => Promise.reject(new Error('unused')), confirm: async () => undefined },
      logger: testLogger(),
    });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/marketplace/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ 'x-amzn-marketplace-token': 'tok' }),
      });
      expect(res.status).toBe(503);
      expect(await res.text()).toContain('Please try again');
    } finally {
      await server.close();
    }
  });
});
