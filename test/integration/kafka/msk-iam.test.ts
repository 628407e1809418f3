/**
 * Kafka with MSK IAM: the processor and the worker connect to a broker that takes OAUTHBEARER only, with
 * tokens checked by MSK IAM's rules (test/support/msk-iam/MskIamValidator.java), through the same token
 * provider and AWS signer they use against MSK (KAFKA_SASL_MECHANISM=aws-msk-iam, credentials from the
 * default chain). Every hour is billed exactly; with a wrong secret key the broker refuses them and the
 * pipeline does not start.
 */
import type { Kafka } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { createKafka } from '../../../src/kafka/client.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import { testLogger, uniqueId, waitFor } from '../../support/harness.ts';
import { type OauthBroker, startOauthBroker } from '../../support/oauth-broker.ts';
import {
  acceptedAtAws,
  expectedAccepted,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const IDENTITY = {
  accessKeyId: 'AKIDMETERLINEMSKTEST',
  secretAccessKey: 'msk-test-secret-0123456789abcdefghijklmno',
  region: 'us-east-1',
};

describe('Kafka on Amazon MSK with IAM (OAUTHBEARER)', () => {
  const stops: (() => Promise<unknown> | unknown)[] = [];
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    process.env.AWS_ACCESS_KEY_ID = saved.id;
    process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  });

  it('bills every hour through a broker that takes only MSK IAM tokens, and refuses a wrong key', async () => {
    const broker: OauthBroker = await startOauthBroker(IDENTITY);
    stops.push(() => broker.stop());
    // The default credential chain reads these, as it would read IRSA's web identity in a pod.
    process.env.AWS_ACCESS_KEY_ID = IDENTITY.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = IDENTITY.secretAccessKey;
    const emulator: RunningEmulator = await startEmulator({
      customers: ['111111111111', '222222222222', '333333333333'],
    });
    stops.push(() => emulator.close());
    const tp: TestPipeline = testPipeline('msk-iam', {
      env: {
        KAFKA_BROKERS: broker.saslBroker,
        KAFKA_SASL_MECHANISM: 'aws-msk-iam',
        // The test broker has no TLS; MSK's IAM listener has, and the default turns it on.
        KAFKA_SSL: 'false',
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
      },
    });
    const config = tp.config();
    // The test's own client signs in the same way (the config's security: the MSK token provider).
    const kafka: Kafka = createKafka({
      brokers: [broker.saslBroker],
      clientId: 'msk-iam-test',
      logger: testLogger(),
      security: config.kafka.security,
    });
    await tp.createTopics(kafka);

    const now = Date.now();
    const events = [
      ...syntheticEvents({
        count: 600,
        customers: ['acme', 'globex', 'initech'],
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: now,
        seed: 11,
        idPrefix: uniqueId('msk'),
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });

    const pipeline: RunningPipeline = await startPipeline(config, testLogger(), {
      processor: true,
      worker: true,
    });
    stops.push(() => pipeline.stop());
    const expected = expectedAccepted(events);
    await waitFor(
      () => {
        const held = acceptedAtAws(emulator);
        return [...expected].every(([k, q]) => held.get(k) === q) ? true : undefined;
      },
      {
        timeoutMs: 120_000,
        describe: () => `AWS holds ${JSON.stringify([...acceptedAtAws(emulator)])}`,
      },
    );
    expect(acceptedAtAws(emulator)).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    await pipeline.stop();
    expect(broker.log()).not.toContain('MskIamValidator: refused');

    // The same pipeline with a wrong secret: its tokens are refused, and it does not start.
    process.env.AWS_SECRET_ACCESS_KEY = `${IDENTITY.secretAccessKey}-wrong`;
    const refused = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true }).then(
      async (p) => {
        await p.stop();
        return undefined;
      },
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(Error);
    // kafkajs reports a refused sign-in only as "no brokers" once its retries are spent: the broker's
    // validator says why.
    expect(broker.log()).toContain('MskIamValidator: refused: bad signature');
    await tp.cleanup(kafka);
  }, 300_000);
});
