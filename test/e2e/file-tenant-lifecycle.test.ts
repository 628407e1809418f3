/**
 * Issue 17, point 6: a tenant mapped in the customers file honours lifecycle events. On a simulated clock,
 * two file tenants on one partition get hourly zero records; one of them uses the product, then AWS reports
 * `unsubscribe-success` for it (named as the SNS message names it: account id and product code). Its usage
 * before that is billed; from the next closed hour on it gets no zero record, while the other tenant still
 * does (its record is what shows the hour was closed). Ground truth: what the emulator accepted.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { parseSnsAction } from '../../src/subscribe/lifecycle-events.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';

const kafka = testKafka();
const LEAVER = {
  customerAwsAccountId: '777777777777',
  licenseArn: 'arn:aws:license-manager::777777777777:license:l-f7',
};
const STAYER = {
  customerAwsAccountId: '888888888888',
  licenseArn: 'arn:aws:license-manager::888888888888:license:l-f8',
};

describe('a customers-file tenant', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('stops getting zero records after unsubscribe-success, and its usage before is billed', async () => {
    const H = hourStart(Date.now()) - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 60_000);
    const emulator: RunningEmulator = await startEmulator({
      customers: [LEAVER, STAYER].map((c) => ({ id: c.customerAwsAccountId, licenseArn: c.licenseArn })),
      now,
    });
    stops.push(() => emulator.close());
    const since = new Date(H).toISOString();
    tp = testPipeline('filelife', {
      partitions: 1,
      dimensions: [{ name: 'api_calls', zeroRecords: true }],
      customers: { leaver: { ...LEAVER, subscribedAt: since }, stayer: { ...STAYER, subscribedAt: since } },
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    await tp.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const directory = new CustomerDirectory(redis, new Keys(tp.run));
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    const key = (c: { customerAwsAccountId: string }, hour: number) =>
      `${c.customerAwsAccountId}|api_calls|${hourIso(hour)}`;
    const accepted = (...keys: string[]) => {
      const held = acceptedAtAws(emulator);
      return keys.every((k) => held.has(k)) ? true : undefined;
    };
    const describeAccepted = () => `accepted: ${[...acceptedAtAws(emulator).keys()]}`;

    // Hour H closes: both tenants get their zero record.
    setClock(H + HOUR_MS + 60_000);
    await waitFor(() => accepted(key(LEAVER, H), key(STAYER, H)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });

    // The leaver uses the product in hour H+1, then unsubscribes (minute 20).
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    const e: RawEvent = {
      id: `${tp.run}-0`,
      customer: 'leaver',
      dimension: 'api_calls',
      quantity: 5,
      timestamp: new Date(H + HOUR_MS + 2 * 60_000).toISOString(),
    };
    await producer.send({
      topic: tp.topics.usage,
      acks: -1,
      messages: [{ key: 'leaver', value: JSON.stringify(e), timestamp: String(now()) }],
    });
    await waitFor(async () => {
      const tasks = (await pipeline.processor?.app.tasks()) ?? [];
      return tasks.some((t) => (t.restorePoint.checkpoint ?? -1n) >= 0n) ? true : undefined;
    });
    setClock(H + HOUR_MS + 20 * 60_000);
    const event = parseSnsAction(
      JSON.stringify({
        action: 'unsubscribe-success',
        'customer-aws-account-id': LEAVER.customerAwsAccountId,
        'product-code': 'prod-test',
      }),
      new Date(now()).toISOString(),
    );
    if (!('status' in event)) throw new Error(`unexpected parse: ${JSON.stringify(event)}`);
    const { outcome, tenant } = await directory.applyStatus(event.ref, event.status, event.eventMs);

    // Hour H+1 closes: the leaver's usage before its unsubscription is billed.
    setClock(H + 2 * HOUR_MS + 60_000);
    await waitFor(() => accepted(key(LEAVER, H + HOUR_MS), key(STAYER, H + HOUR_MS)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });
    // Hour H+2 closes: the stayer's zero record shows it closed; the leaver gets none.
    setClock(H + 3 * HOUR_MS + 60_000);
    await waitFor(() => accepted(key(STAYER, H + 2 * HOUR_MS)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });
    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({
      [key(LEAVER, H)]: 0,
      [key(STAYER, H)]: 0,
      [key(LEAVER, H + HOUR_MS)]: 5,
      [key(STAYER, H + HOUR_MS)]: 0,
      [key(STAYER, H + 2 * HOUR_MS)]: 0,
    });
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect({ outcome, tenant }).toEqual({ outcome: 'applied', tenant: 'leaver' });
  }, 300_000);
});
