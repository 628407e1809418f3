/**
 * Legacy SNS lifecycle messages through the registration service's HTTP endpoint, signed for real: a key
 * and certificate (CN=sns.amazonaws.com) issued by a test CA made with openssl stand in for SNS's, served
 * under an SNS certificate URL (the default URL rule applies); the CA reaches the verifier only through the
 * registration's test seam. The confirmation is confirmed, each action moves the tenant's status in Redis,
 * and tampered or older messages change nothing.
 */
import { createSign } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { type SnsMessage, snsStringToSign } from '../../../src/subscribe/sns-message.ts';
import { deleteKeys, testLogger } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';
import { certPath, makeTestCa } from '../../support/sns-test-ca.ts';

// The plan's product (prod-test) has this topic by default: no METERLINE_SNS_TOPIC_ARNS needed.
const TOPIC = 'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-prod-test';
const CERT_URL = `https://sns.us-east-1.amazonaws.com${certPath('lifecycle')}`;

describe('SNS subscription lifecycle', () => {
  const ca = makeTestCa('sns-lifecycle');
  let tp: TestPipeline | undefined;
  let registration: RunningRegistration | undefined;
  afterAll(async () => {
    await registration?.stop();
    // No topics were made: only this run's keys to remove.
    if (tp) await deleteKeys(tp.run);
    ca.cleanup();
  });

  it('confirms the subscription and applies signed actions in event-time order', async () => {
    const key = ca.sns.key;
    const fetched: string[] = [];
    const confirmed: string[] = [];
    tp = testPipeline('sns-lifecycle', { customers: {} });
    registration = await startRegistration(
      tp.config(['registration']),
      testLogger(),
      // The real verifier and confirmation, with every outbound GET answered locally and recorded.
      {
        sns: {
          roots: [ca.root],
          get: async (url) => {
            if (url.endsWith('.pem')) {
              fetched.push(url);
              return Buffer.from(ca.sns.cert);
            }
            confirmed.push(url);
            return Buffer.from('<ConfirmSubscriptionResponse/>');
          },
        },
      },
    );
    const url = `http://127.0.0.1:${registration.server.port}/marketplace/events`;
    const sign = (m: Omit<SnsMessage, 'Signature' | 'SignatureVersion' | 'SigningCertURL'>): SnsMessage => {
      const unsigned = { ...m, SignatureVersion: '2' as const, SigningCertURL: CERT_URL, Signature: '' };
      const signature = createSign('RSA-SHA256').update(snsStringToSign(unsigned)).sign(key, 'base64');
      return { ...unsigned, Signature: signature };
    };
    const send = async (m: SnsMessage) => {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'x-amz-sns-message-type': m.Type, 'content-type': 'text/plain; charset=UTF-8' },
        body: JSON.stringify(m),
      });
      return [res.status, (await res.text()).trim()] as const;
    };
    let n = 0;
    const notify = (action: string, atMs: number) =>
      sign({
        Type: 'Notification',
        MessageId: `m-${++n}`,
        TopicArn: TOPIC,
        Timestamp: new Date(atMs).toISOString(),
        Message: JSON.stringify({
          action,
          'customer-identifier': 'cust-legacy-1',
          'product-code': 'prod-test',
          'offer-identifier': 'offer-1',
        }),
      });

    expect(
      await send(
        sign({
          Type: 'SubscriptionConfirmation',
          MessageId: 'c-1',
          TopicArn: TOPIC,
          Timestamp: new Date().toISOString(),
          Message: 'You have chosen to subscribe to the topic.',
          Token: 'tok',
          SubscribeURL: `https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=${TOPIC}&Token=tok`,
        }),
      ),
    ).toEqual([200, 'subscription confirmed']);
    expect(confirmed).toEqual([
      `https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=${TOPIC}&Token=tok`,
    ]);
    // A signed confirmation naming any other host is refused, and nothing is fetched.
    expect(
      await send(
        sign({
          Type: 'SubscriptionConfirmation',
          MessageId: 'c-2',
          TopicArn: TOPIC,
          Timestamp: new Date().toISOString(),
          Message: 'You have chosen to subscribe to the topic.',
          Token: 'tok',
          SubscribeURL: 'https://sns.us-east-1.amazonaws.com.attacker.example/?Action=ConfirmSubscription',
        }),
      ),
    ).toEqual([403, 'SubscribeURL is not an SNS endpoint']);
    expect(confirmed).toHaveLength(1);

    const t0 = Date.now() - 10 * 60_000;
    // A legacy (CustomerIdentifier) buyer that registered ten minutes ago.
    await registration.directory.register(
      'cust-legacy-1',
      { productCode: 'prod-test', customerIdentifier: 'cust-legacy-1' },
      t0,
    );
    const status = async () =>
      (await registration?.directory.get(['cust-legacy-1']))?.get('cust-legacy-1')?.status;

    const pending = notify('unsubscribe-pending', t0 + 60_000);
    expect(await send({ ...pending, Message: pending.Message.replace('pending', 'success') })).toEqual([
      403,
      expect.stringContaining('signature'),
    ]);
    expect(await status()).toBe('subscribed');
    expect(await send(pending)).toEqual([200, 'applied']);
    expect(await status()).toBe('unsubscribe-pending');
    // SNS may deliver out of order: a subscribe-success older than the pending unsubscribe is ignored.
    expect(await send(notify('subscribe-success', t0 + 30_000))).toEqual([200, 'stale']);
    expect(await send(notify('entitlement-updated', t0 + 90_000))).toEqual([200, 'ignored']);
    expect(await send(notify('unsubscribe-success', t0 + 120_000))).toEqual([200, 'applied']);
    expect(await status()).toBe('unsubscribed');
    // A stranger's message is accepted (SNS would redeliver otherwise) and changes nothing.
    const stranger = notify('unsubscribe-success', t0 + 130_000);
    const strangerMessage = JSON.parse(stranger.Message) as Record<string, string>;
    strangerMessage['customer-identifier'] = 'cust-unknown';
    const resigned = sign({ ...stranger, Message: JSON.stringify(strangerMessage) });
    expect(await send(resigned)).toEqual([200, 'unknown_customer']);
    // One certificate fetch for every message: it is cached by URL.
    expect(fetched).toEqual([CERT_URL]);
  });
});
