/**
 * Issue 17, point 3: a buyer of two products. The directory keeps one entry per product subscription, so
 * each product is billed with its own license, and a lifecycle event applies to the product it names only.
 * On a simulated clock, one AWS account registers for products A and B (one license each, as AWS grants
 * them), uses both, then AWS reports `unsubscribe-success` for A (named as the SNS message names it: account
 * id and product code) and ends A's agreement. B goes on: its usage is billed and its zero records
 * continue; A gets no zero record after, and its usage after the unsubscription is not billed. Ground
 * truth: what the emulator accepted, with which license, and the failed-records topic.
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
import { acceptedAtAws, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';
import { appliedMessages, twoProductBuyer, twoProductPlan } from '../support/two-products.ts';

const kafka = testKafka();
const BUYER = twoProductBuyer('121212121212', 'p');
const ACCOUNT = BUYER.account;
const LICENSE_A = BUYER.license['prod-a'];
const LICENSE_B = BUYER.license['prod-b'];

describe('a buyer of two products', () => {
  const stops: (() => Promise<void> | void)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('bills each product with its own license; unsubscribing from one stops only that one', async () => {
    const H = hourStart(Date.now()) - 3 * HOUR_MS;
    const { now, setClock } = simulatedClock(H + 60_000);
    const emulator: RunningEmulator = await startEmulator({ customers: BUYER.emulatorCustomers, now });
    stops.push(() => emulator.close());
    const plan = twoProductPlan({ model: 'hourly', aggregation: 'sum', zeroRecords: true });
    tp = testPipeline('twoprod', {
      partitions: 1,
      customers: {},
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_PLAN: plan },
    });
    await tp.createTopics(kafka);
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const directory = new CustomerDirectory(redis, new Keys(tp.run));
    await BUYER.register(directory, 'prod-a', now());
    await BUYER.register(directory, 'prod-b', now());

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    let n = 0;
    const produce = async (dimension: string, atMs: number, quantity: number) => {
      const e: RawEvent = {
        id: `${tp?.run}-${n++}`,
        customer: ACCOUNT,
        dimension,
        quantity,
        timestamp: new Date(atMs).toISOString(),
      };
      await producer.send({
        topic: tp?.topics.usage as string,
        acks: -1,
        messages: [{ key: ACCOUNT, value: JSON.stringify(e), timestamp: String(now()) }],
      });
    };
    await produce('a_calls', H + 2 * 60_000, 5);
    await produce('b_calls', H + 2 * 60_000, 7);
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    const applied = async () => ((await appliedMessages(pipeline)) >= n ? true : undefined);
    await waitFor(applied, { describe: () => 'the first usage is not applied yet' });

    const key = (dim: string, hour: number) => `${ACCOUNT}|${dim}|${hourIso(hour)}`;
    const accepted = (...keys: string[]) => {
      const held = acceptedAtAws(emulator);
      return keys.every((k) => held.has(k)) ? true : undefined;
    };
    const describeAccepted = () => `accepted: ${[...acceptedAtAws(emulator).keys()]}`;
    const licenseOf = (dim: string, hour: number) =>
      emulator.state.snapshot().records.find((r) => r.dimension === dim && r.timestamp === hourIso(hour))
        ?.licenseArn;

    // Hour H closes: each product's usage is billed with that product's license.
    setClock(H + HOUR_MS + 60_000);
    await waitFor(() => accepted(key('a_calls', H), key('b_calls', H)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });
    expect(licenseOf('a_calls', H)).toBe(LICENSE_A);
    expect(licenseOf('b_calls', H)).toBe(LICENSE_B);

    // Minute 20 of H+1: the buyer leaves product A only (AWS ends that agreement and says so).
    setClock(H + HOUR_MS + 20 * 60_000);
    const event = parseSnsAction(
      JSON.stringify({
        action: 'unsubscribe-success',
        'customer-aws-account-id': ACCOUNT,
        'product-code': 'prod-a',
      }),
      new Date(now()).toISOString(),
    );
    if (!('status' in event)) throw new Error(`unexpected parse: ${JSON.stringify(event)}`);
    const outcome = await directory.applyStatus(event.ref, event.status, event.eventMs);
    emulator.state.unsubscribe([ACCOUNT], 'prod-a');
    // Afterwards the buyer still uses both: B's usage is billed, A's is not.
    setClock(H + HOUR_MS + 25 * 60_000);
    await produce('a_calls', H + HOUR_MS + 25 * 60_000, 3);
    await produce('b_calls', H + HOUR_MS + 25 * 60_000, 4);
    await waitFor(applied, { describe: () => 'the usage after the unsubscription is not applied yet' });

    setClock(H + 2 * HOUR_MS + 60_000);
    await waitFor(() => accepted(key('b_calls', H + HOUR_MS)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });
    // Hour H+2 has no usage: B's zero record shows it closed; A gets none.
    setClock(H + 3 * HOUR_MS + 60_000);
    await waitFor(() => accepted(key('b_calls', H + 2 * HOUR_MS)), {
      timeoutMs: 60_000,
      describe: describeAccepted,
    });
    const failed = async () => {
      const messages = await readAllMessages(kafka, tp?.topics.failed as string);
      return messages.length ? messages : undefined;
    };
    const dead = (await waitFor(failed, { timeoutMs: 60_000, describe: () => 'nothing dead-lettered' })).map(
      (m) =>
        JSON.parse(String(m.value)) as { reason: string; record: { dimension: string; quantity: number } },
    );

    expect(Object.fromEntries(acceptedAtAws(emulator))).toEqual({
      [key('a_calls', H)]: 5,
      [key('b_calls', H)]: 7,
      [key('b_calls', H + HOUR_MS)]: 4,
      [key('b_calls', H + 2 * HOUR_MS)]: 0,
    });
    expect(licenseOf('b_calls', H + 2 * HOUR_MS)).toBe(LICENSE_B);
    // A's usage after unsubscribe-success: AWS refused it, and it is in the failed-records topic.
    expect(dead.map((d) => [d.reason, d.record.dimension, d.record.quantity])).toEqual([
      ['customer_not_subscribed', 'a_calls', 3],
    ]);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(outcome).toEqual({ outcome: 'applied', tenant: ACCOUNT });
    // The directory: A ended, B still subscribed, each with its license.
    const entries = (await directory.subscriptions()).map((e) => [e.productCode, e.licenseArn, e.status]);
    expect(entries.sort()).toEqual([
      ['prod-a', LICENSE_A, 'unsubscribed'],
      ['prod-b', LICENSE_B, 'subscribed'],
    ]);
  }, 300_000);
});
