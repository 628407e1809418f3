/**
 * GetEntitlements drives the contract-with-overage model, on the real stack with a simulated clock
 * (processor, worker and emulator): two buyers register through the registration URL and their contracts
 * come from AWS (the first GetEntitlements calls throttled and failing with 500, retried); a tenant of the
 * customers file keeps its own contract although AWS holds another. Usage within the entitlement is not
 * billed, overage is; an entitlement lowered mid-period (emulator changed, then the scheduled refresh)
 * bills from the next hour; an expired entitlement no longer counts; and a refresh AWS keeps failing leaves
 * the stored contract in force. What AWS must hold is computed here from the events and the timeline.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import type { FaultAction } from '../../src/emulator/emulator-types.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { ServiceError } from '../../src/emulator/service-error.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { EntitlementStore } from '../../src/state/entitlement-store.ts';
import { type RunningRegistration, startRegistration } from '../../src/subscribe/registration.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';
import { simulatedClock } from '../support/sim-clock.ts';

const kafka = testKafka();
const PRODUCT = 'prod-test';
const NEWCO = {
  customerAwsAccountId: '444444444444',
  licenseArn: 'arn:aws:license-manager::444444444444:license:l-n4',
};
const OLDCO = {
  customerAwsAccountId: '777777777777',
  licenseArn: 'arn:aws:license-manager::777777777777:license:l-o7',
};
const ACME = {
  customerAwsAccountId: '111111111111',
  licenseArn: 'arn:aws:license-manager::111111111111:license:l-a1',
};

describe('contract entitlements from GetEntitlements', () => {
  const stops: (() => Promise<unknown> | unknown)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const stop of stops.reverse()) await Promise.resolve(stop()).catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('bills only the overage above what AWS entitles, following updates from the next hour', async () => {
    const S0 = hourStart(Date.now()) - 30 * HOUR_MS;
    const { now, setClock } = simulatedClock(S0 + 50 * 60_000);
    const OLDCO_EXPIRES = S0 + HOUR_MS + 30 * 60_000;
    // The timeline of what AWS entitles, as the test changes it (units per period).
    const entitled = { newco: [100, 100, 60, 60] };

    let fault: ((operation: string) => FaultAction | undefined) | undefined;
    const emulator: RunningEmulator = await startEmulator({
      customers: [{ id: ACME.customerAwsAccountId, licenseArn: ACME.licenseArn }],
      now,
      faults: { beforeOperation: (operation) => fault?.(operation) },
    });
    stops.push(() => emulator.close());
    const entitle = async (set: unknown[]) => {
      const res = await fetch(`${emulator.url}/_emulator/entitlements`, {
        method: 'POST',
        body: JSON.stringify({ set }),
      });
      expect(res.status).toBe(200);
    };
    await entitle([
      { productCode: PRODUCT, ...NEWCO, dimension: 'overage_gb', value: 100 },
      {
        productCode: PRODUCT,
        ...OLDCO,
        dimension: 'overage_gb',
        value: 50,
        expirationDate: new Date(OLDCO_EXPIRES).toISOString(),
      },
      // acme's contract is in the customers file: that one counts.
      { productCode: PRODUCT, ...ACME, dimension: 'overage_gb', value: 1000 },
    ]);
    tp = testPipeline('entitlements-e2e', {
      dimensions: [{ name: 'overage_gb', model: 'contract' }],
      customers: {
        acme: {
          ...ACME,
          contract: { start: '2026-01-01T00:00:00Z', period: 'month', entitlements: { overage_gb: 10 } },
        },
      },
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: emulator.url,
        METERLINE_REGISTRATION_LISTEN_PORT: '0',
      },
    });
    await tp.createTopics(kafka);
    const registration: RunningRegistration = await startRegistration(
      tp.config(['registration']),
      testLogger(),
    );
    stops.push(() => registration.stop());
    const redis = createRedis(stackEnv().redisUrl);
    stops.push(() => redis.disconnect());
    const store = new EntitlementStore(redis, new Keys(tp.run));

    // Both buyers register through the registration URL; AWS throttles twice and fails once first.
    let failing = 3;
    fault = (operation) =>
      operation === 'GetEntitlements' && failing-- > 0
        ? {
            kind: 'error',
            error:
              failing === 0
                ? new ServiceError('InternalServiceErrorException', 'An internal error occurred')
                : new ServiceError('ThrottlingException', 'Rate exceeded'),
          }
        : undefined;
    for (const buyer of [NEWCO, OLDCO]) {
      const res = await fetch(`${emulator.url}/_emulator/registration-tokens`, {
        method: 'POST',
        body: JSON.stringify({ productCode: PRODUCT, ...buyer }),
      });
      const { token } = (await res.json()) as { token: string };
      const reg = await fetch(`http://127.0.0.1:${registration.server.port}/marketplace/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ 'x-amzn-marketplace-token': token }).toString(),
      });
      expect(reg.status).toBe(200);
    }
    for (const buyer of [NEWCO, OLDCO]) {
      await waitFor(() => store.get(buyer.customerAwsAccountId, PRODUCT), {
        timeoutMs: 30_000,
        describe: () => `${buyer.customerAwsAccountId}'s entitlements not stored`,
      });
    }
    expect(failing).toBeLessThan(0);
    // Not fetched for acme (its contract is the file's); stored anyway, it must still not count.
    await store.put({
      tenant: 'acme',
      productCode: PRODUCT,
      fetchedAt: new Date().toISOString(),
      dimensions: { overage_gb: { value: 1000 } },
    });

    // Usage: four hours, two events an hour per tenant.
    const perHour: Record<string, number> = {
      [NEWCO.customerAwsAccountId]: 40,
      [OLDCO.customerAwsAccountId]: 30,
      acme: 8,
    };
    const events = (h: number): RawEvent[] =>
      Object.entries(perHour).flatMap(([customer, q]) =>
        [0, 1].map((k) => ({
          id: `${tp?.run}-${customer}-${h}-${k}`,
          customer,
          dimension: 'overage_gb',
          quantity: q / 2,
          timestamp: new Date(S0 + h * HOUR_MS + (10 + k) * 60_000).toISOString(),
        })),
      );
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    stops.push(() => producer.disconnect());
    const produce = async (hours: number[]) => {
      const batch = hours.flatMap(events);
      // Usage is sent after it happened: the clock first passes the last event (still inside its hour).
      // The processor may read the events before the test's next line moves the clock on, and it refuses
      // one further ahead of its clock than the max future skew (future_timestamp): that hour would never
      // be billed.
      setClock(Math.max(...batch.map((e) => Date.parse(String(e.timestamp)))) + 60_000);
      await producer.send({
        topic: tp?.topics.usage as string,
        acks: -1,
        messages: batch.map((e) => ({
          key: e.customer,
          value: JSON.stringify(e),
          timestamp: String(Date.parse(String(e.timestamp)) + 30_000),
        })),
      });
    };

    // Ground truth, from the events and the timeline alone: per tenant and hour, the cumulative usage of
    // the period above the entitlement in force, less what was billed. OLDCO's entitlement expires inside
    // hour 1: hours from 2 on start a new period without one.
    const truth = (hours: number): Map<string, number> => {
      const out = new Map<string, number>();
      const awsId = (c: string) => (c === 'acme' ? ACME.customerAwsAccountId : c);
      for (const customer of Object.keys(perHour)) {
        let cumulative = 0;
        let billed = 0;
        let period = '';
        for (let h = 0; h < hours; h++) {
          const hourMs = S0 + h * HOUR_MS;
          const usage = events(h)
            .filter((e) => e.customer === customer)
            .reduce((s, e) => s + e.quantity, 0);
          let entitlement: number;
          let p = 'contract';
          if (customer === 'acme') entitlement = 10;
          else if (customer === NEWCO.customerAwsAccountId) entitlement = entitled.newco[h] as number;
          else if (hourMs < OLDCO_EXPIRES) entitlement = 50;
          else {
            entitlement = 0;
            p = 'after-expiry';
          }
          if (p !== period) {
            period = p;
            cumulative = 0;
            billed = 0;
          }
          cumulative += usage;
          const due = Math.max(0, Math.max(0, cumulative - entitlement) - billed);
          billed += due;
          if (due > 0) out.set(`${awsId(customer)}|overage_gb|${hourIso(hourMs)}`, due);
        }
      }
      return out;
    };
    const billedThrough = async (hours: number) => {
      const expected = truth(hours);
      await waitFor(
        () => {
          const held = acceptedAtAws(emulator);
          return [...expected].every(([k, q]) => held.get(k) === q) ? true : undefined;
        },
        {
          // A first billing waits for two consumer groups to join and the hours to close: under a loaded
          // machine (the full suite beside other runs) that took over 90 s twice here.
          timeoutMs: 180_000,
          // What the pipeline was doing, for a failure seen only in full CI runs (see test/vitest.config.ts).
          describe: async () =>
            `AWS holds ${JSON.stringify([...acceptedAtAws(emulator)])}, expected ${JSON.stringify([...expected])}; ${JSON.stringify(
              {
                simNow: new Date(now()).toISOString(),
                realNow: new Date().toISOString(),
                commit: pipeline.processor?.commitStage.stats,
                worker: pipeline.worker?.stats,
                emulator: { ...emulator.state.snapshot(), records: undefined },
                submissions: (await readAllMessages(kafka, tp?.topics.submissions as string)).length,
                failed: (await readAllMessages(kafka, tp?.topics.failed as string)).map((m) =>
                  m.value?.toString().slice(0, 300),
                ),
              },
              (_, v) => (typeof v === 'bigint' ? v.toString() : v),
            )}`,
        },
      );
      expect(acceptedAtAws(emulator)).toEqual(expected);
    };
    const boundary = () => pipeline.processor?.commitStage.stats.closeBoundary ?? 0;
    /** Two commit ticks after this point: the second started after any change made before it. */
    const twoTicks = async () => {
      const first = await waitFor(() => (boundary() > 0 ? boundary() : undefined));
      const second = await waitFor(() => (boundary() > first ? boundary() : undefined));
      await waitFor(() => (boundary() > second ? true : undefined));
    };

    // Hours 0 and 1 with the entitlements fetched at registration.
    await produce([0, 1]);
    setClock(S0 + 2 * HOUR_MS + 60_000);
    const pipeline: RunningPipeline = await startPipeline(tp.config(), testLogger(), {
      processor: true,
      worker: true,
      now,
    });
    stops.push(() => pipeline.stop());
    await billedThrough(2);

    // AWS lowers newco's entitlement mid-period; the scheduled refresh picks it up: billed from hour 2.
    await entitle([{ productCode: PRODUCT, ...NEWCO, dimension: 'overage_gb', value: 60 }]);
    expect(await registration.entitlements.refreshAll()).toEqual({ stored: 2, failed: 0 });
    expect((await store.get(NEWCO.customerAwsAccountId, PRODUCT))?.dimensions.overage_gb).toEqual({
      value: 60,
    });
    await twoTicks();
    await produce([2]);
    setClock(S0 + 3 * HOUR_MS + 60_000);
    await billedThrough(3);

    // AWS would now say 1000, but every GetEntitlements call fails (500s and throttling): nothing is
    // stored, and hour 3 is billed with the contract stored before.
    await entitle([{ productCode: PRODUCT, ...NEWCO, dimension: 'overage_gb', value: 1000 }]);
    const kept = await store.all();
    let n = 0;
    fault = (operation) =>
      operation === 'GetEntitlements'
        ? {
            kind: 'error',
            error:
              n++ % 2 === 0
                ? new ServiceError('InternalServiceErrorException', 'An internal error occurred')
                : new ServiceError('ThrottlingException', 'Rate exceeded'),
          }
        : undefined;
    expect(await registration.entitlements.refreshAll()).toEqual({ stored: 0, failed: 2 });
    expect(n).toBe(12);
    expect(await store.all()).toEqual(kept);
    await twoTicks();
    await produce([3]);
    setClock(S0 + 4 * HOUR_MS + 60_000);
    await billedThrough(4);

    // Within the entitlement nothing was billed (newco's first two hours, oldco's first), and overage was.
    const held = acceptedAtAws(emulator);
    expect(held.has(`${NEWCO.customerAwsAccountId}|overage_gb|${hourIso(S0)}`)).toBe(false);
    expect(held.get(`${NEWCO.customerAwsAccountId}|overage_gb|${hourIso(S0 + 2 * HOUR_MS)}`)).toBe(60);
    expect(held.get(`${NEWCO.customerAwsAccountId}|overage_gb|${hourIso(S0 + 3 * HOUR_MS)}`)).toBe(40);
    expect(held.get(`${OLDCO.customerAwsAccountId}|overage_gb|${hourIso(S0 + 2 * HOUR_MS)}`)).toBe(30);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
  }, 600_000);
});
