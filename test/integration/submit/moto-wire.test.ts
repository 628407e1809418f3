/**
 * A wire-format cross-check of BatchMeterUsage against moto (a third-party AWS mock), through the real
 * worker: MeteringWorker.submit() with the real SDK client, a Ledger on Redis and a DlqPublisher on Kafka.
 *
 * moto is not our emulator (src/emulator/ is, and it is the faithful one): moto 5.2.1 implements only
 * BatchMeterUsage, with no dedupe, no time window, no shape validation (it reads the JSON body and takes
 * Timestamp, CustomerIdentifier, Dimension and Quantity out of each record), and it subscribes customers
 * only in process. test/support/moto_metering_server.py seeds them there and runs moto's server.
 * What this file shows is that an independent implementation routes, parses and answers the requests our
 * worker builds, and that the worker reads moto's answers back (matching results to records, ledger).
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type {
  BatchMeterUsageCommandOutput,
  MarketplaceMeteringClient,
} from '@aws-sdk/client-marketplace-metering';
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Customers } from '../../../src/config/customers.ts';
import { ensureTopics } from '../../../src/kafka/topics.ts';
import type { FailedRecord } from '../../../src/metering/dlq-envelope.ts';
import { DlqPublisher } from '../../../src/metering/dlq-publisher.ts';
import { makeSubmissionRecord, type SubmissionRecord } from '../../../src/metering/submission-record.ts';
import { createRedis, type ScriptedRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { Ledger } from '../../../src/state/ledger.ts';
import { MeteringWorker } from '../../../src/submit/worker.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { stopGracefully } from '../../support/child.ts';
import { sdkClient } from '../../support/emulator.ts';
import {
  deleteKeys,
  deleteTopics,
  stackEnv,
  testKafka,
  testLogger,
  uniqueId,
  waitFor,
} from '../../support/harness.ts';
import { readAllMessages } from '../../support/pipeline-env.ts';

const LAUNCHER = fileURLToPath(new URL('../../support/moto_metering_server.py', import.meta.url));
const PRODUCT = 'prod-moto';

/** Why the suite cannot run here, or undefined when python3 and moto (with its server extras) are present. */
function missingMoto(): string | undefined {
  const probe = spawnSync('python3', ['-c', 'import moto, moto.server, moto.meteringmarketplace'], {
    encoding: 'utf8',
  });
  if (probe.error) return `python3 is not available (${probe.error.message})`;
  if (probe.status !== 0) {
    return `moto (with its server extras) is not importable by python3: ${probe.stderr.trim().split('\n').at(-1)}`;
  }
  return undefined;
}
const skipReason = missingMoto();
if (skipReason) console.warn(`moto-wire.test.ts skipped: ${skipReason}`);

// Tenants as the customers file maps them. The moto launcher subscribes acme, globex and also initech's
// account id, so initech's failure below cannot be a subscription answer; hooli is never subscribed.
const CUSTOMERS: Customers = {
  acme: { customerIdentifier: 'cust-moto-acme' },
  globex: { customerIdentifier: 'cust-moto-globex' },
  hooli: { customerIdentifier: 'cust-moto-hooli' },
  initech: {
    customerAwsAccountId: '333333333333',
    licenseArn: 'arn:aws:license-manager::333333333333:license:l-c3',
  },
};
const SEEDED = ['cust-moto-acme', 'cust-moto-globex', '333333333333'];

/** One BatchMeterUsage call as it left the SDK and as the SDK read moto's answer. */
interface WireCall {
  target: string | undefined;
  body: { ProductCode?: string; UsageRecords?: Record<string, unknown>[] };
  output?: BatchMeterUsageCommandOutput;
  error?: Error & { $metadata?: { httpStatusCode?: number } };
}

describe.skipIf(skipReason !== undefined)(
  skipReason
    ? `BatchMeterUsage wire format on moto (skipped: ${skipReason})`
    : 'BatchMeterUsage wire format on moto',
  () => {
    const kafka = testKafka();
    const run = uniqueId('moto-wire');
    const dlqTopic = `${run}-failed`;
    let moto: ChildProcessWithoutNullStreams | undefined;
    let motoStderr = '';
    let client: MarketplaceMeteringClient;
    let redis: ScriptedRedis;
    let producer: Producer;
    let calls: WireCall[] = [];
    let onFailedCall: (() => void) | undefined;

    beforeAll(async () => {
      const child = spawn(
        'python3',
        [
          LAUNCHER,
          '--port',
          '0',
          '--region',
          'us-east-1',
          '--product',
          PRODUCT,
          ...SEEDED.flatMap((c) => ['--customer', c]),
        ],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      moto = child;
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        motoStderr += chunk;
      });
      // The launcher prints one JSON line once moto listens; an exit before that fails the setup.
      const lines = createInterface({ input: child.stdout });
      const ready = await new Promise<{ ready: boolean; port: number }>((resolve, reject) => {
        const onExit = (code: number | null) =>
          reject(new Error(`moto launcher exited (${code}) before it was ready:\n${motoStderr}`));
        child.once('exit', onExit);
        child.once('error', reject);
        lines.once('line', (line) => {
          child.off('exit', onExit);
          child.off('error', reject);
          try {
            resolve(JSON.parse(line) as { ready: boolean; port: number });
          } catch (error) {
            reject(error);
          }
        });
      });
      expect(ready).toMatchObject({ ready: true, subscribed: { [PRODUCT]: SEEDED } });

      client = sdkClient(`http://127.0.0.1:${ready.port}`);
      client.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName !== 'BatchMeterUsageCommand') return next(args);
          const request = args.request as { headers: Record<string, string>; body?: unknown };
          const call: WireCall = {
            target: request.headers['x-amz-target'],
            body: JSON.parse(
              typeof request.body === 'string'
                ? request.body
                : new TextDecoder().decode(request.body as Uint8Array),
            ) as WireCall['body'],
          };
          calls.push(call);
          try {
            const out = await next(args);
            call.output = out.output as BatchMeterUsageCommandOutput;
            return out;
          } catch (error) {
            call.error = error as WireCall['error'];
            onFailedCall?.();
            throw error;
          }
        },
        { step: 'build', name: 'motoWireCapture' },
      );

      redis = createRedis(stackEnv().redisUrl);
      await ensureTopics(kafka, [{ topic: dlqTopic, numPartitions: 1 }]);
      producer = kafka.producer();
      await producer.connect();
    });

    afterAll(async () => {
      client?.destroy();
      if (moto) {
        moto.stdin.end();
        await stopGracefully(moto);
      }
      await producer?.disconnect();
      redis?.disconnect();
      await deleteTopics(kafka, [dlqTopic]);
      await deleteKeys(run);
    });

    beforeEach(() => {
      calls = [];
      onFailedCall = undefined;
    });

    function worker(now: () => number = Date.now): { worker: MeteringWorker; ledger: Ledger } {
      const ledger = new Ledger(redis, new Keys(`${run}:${uniqueId('l')}`));
      const w = new MeteringWorker({
        kafka,
        client,
        ledger,
        dlq: new DlqPublisher(producer, dlqTopic),
        customers: new Map(Object.entries(CUSTOMERS)),
        topic: 'unused',
        groupId: 'unused',
        deadlineMarginMs: 5 * 60_000,
        logger: testLogger(),
        backoff: { baseMs: 5, maxMs: 40 },
        now,
      });
      return { worker: w, ledger };
    }

    const hourMs = hourStart(Date.now()) - HOUR_MS;
    function record(customer: string, dimension: string, quantity: number): SubmissionRecord {
      return makeSubmissionRecord({
        productCode: PRODUCT,
        customer,
        dimension,
        hourMs,
        quantity,
        api: 'BatchMeterUsage',
        finalizedAtMs: Date.now(),
      });
    }

    async function deadLetters(recordIds: string[]): Promise<FailedRecord[]> {
      const all = (await readAllMessages(kafka, dlqTopic)).map(
        (m) => JSON.parse(String(m.value)) as FailedRecord,
      );
      return all.filter((f) => f.record && recordIds.includes(f.record.recordId));
    }

    function statuses(call: WireCall | undefined): Record<string, string | undefined> {
      return Object.fromEntries(
        (call?.output?.Results ?? []).map((r) => [
          `${r.UsageRecord?.CustomerIdentifier}|${r.UsageRecord?.Dimension}`,
          r.Status,
        ]),
      );
    }

    it('accepts CustomerIdentifier records with usage allocations as the worker sends them, and the ledger records them', async () => {
      const { worker: w, ledger } = worker();
      const tagged = {
        ...record('globex', 'alloc_calls', 7),
        allocations: [{ tags: { team: 'red', env: 'prod' }, quantity: 5 }, { quantity: 2 }],
      };
      const records = [record('acme', 'api_calls', 3), tagged];
      await w.submit(records);

      expect(calls).toHaveLength(1);
      const [call] = calls;
      // What went over the wire: the JSON 1.1 target moto dispatches on, the hour as epoch seconds.
      expect(call?.target).toBe('AWSMPMeteringService.BatchMeterUsage');
      expect(call?.body).toEqual({
        ProductCode: PRODUCT,
        UsageRecords: [
          {
            Timestamp: hourMs / 1000,
            Dimension: 'api_calls',
            Quantity: 3,
            CustomerIdentifier: 'cust-moto-acme',
          },
          {
            Timestamp: hourMs / 1000,
            Dimension: 'alloc_calls',
            Quantity: 7,
            CustomerIdentifier: 'cust-moto-globex',
            UsageAllocations: [
              {
                AllocatedUsageQuantity: 5,
                Tags: [
                  { Key: 'team', Value: 'red' },
                  { Key: 'env', Value: 'prod' },
                ],
              },
              { AllocatedUsageQuantity: 2 },
            ],
          },
        ],
      });
      // moto parses the body, answers each record and echoes it back (without UsageAllocations, which it
      // ignores: moto does not check that they sum to the quantity; our emulator does).
      expect(call?.error).toBeUndefined();
      expect(statuses(call)).toEqual({
        'cust-moto-acme|api_calls': 'Success',
        'cust-moto-globex|alloc_calls': 'Success',
      });
      expect(call?.output?.Results?.map((r) => r.UsageRecord?.Timestamp?.getTime())).toEqual([
        hourMs,
        hourMs,
      ]);
      expect(call?.output?.UnprocessedRecords).toEqual([]);

      // The worker matched moto's results to its records and wrote moto's MeteringRecordIds to the ledger.
      expect(w.stats).toMatchObject({ accepted: 2, calls: 1, retries: 0, deadLettered: {} });
      const accepted = await ledger.accepted(records.map((r) => r.recordId));
      expect(accepted.size).toBe(2);
      for (const result of call?.output?.Results ?? []) {
        const r = records.find((x) => x.dimension === result.UsageRecord?.Dimension);
        expect(result.MeteringRecordId).toMatch(/^[0-9a-f]{32}$/);
        expect(accepted.get(r?.recordId ?? '')).toMatchObject({
          meteringRecordId: result.MeteringRecordId,
          quantity: r?.quantity,
        });
      }
    });

    it('accepts a full batch of 25 records in one call', async () => {
      const { worker: w, ledger } = worker();
      const records = Array.from({ length: 25 }, (_, i) =>
        record(i % 2 ? 'globex' : 'acme', `dim_${i}`, i + 1),
      );
      await w.submit(records);

      expect(calls).toHaveLength(1);
      expect(calls[0]?.body.UsageRecords).toHaveLength(25);
      expect(calls[0]?.output?.Results).toHaveLength(25);
      expect(calls[0]?.output?.Results?.every((r) => r.Status === 'Success')).toBe(true);
      expect(w.stats).toMatchObject({ accepted: 25, calls: 1, retries: 0 });
      expect((await ledger.accepted(records.map((r) => r.recordId))).size).toBe(25);
    });

    it('answers CustomerNotSubscribed for an unseeded customer, which the worker dead-letters, and accepts its batch-mates', async () => {
      const { worker: w, ledger } = worker();
      const subscribed = record('acme', 'jobs', 4);
      const unsubscribed = record('hooli', 'jobs', 4);
      await w.submit([subscribed, unsubscribed]);

      expect(calls).toHaveLength(1);
      expect(statuses(calls[0])).toEqual({
        'cust-moto-acme|jobs': 'Success',
        'cust-moto-hooli|jobs': 'CustomerNotSubscribed',
      });
      const accepted = await ledger.accepted([subscribed.recordId, unsubscribed.recordId]);
      expect([...accepted.keys()]).toEqual([subscribed.recordId]);
      const dead = await deadLetters([unsubscribed.recordId]);
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({
        stage: 'submit',
        reason: 'customer_not_subscribed',
        retriable: true,
        detail: 'AWS status CustomerNotSubscribed',
        record: { recordId: unsubscribed.recordId, customer: 'hooli' },
      });
    });

    it('moto 5.2.1 cannot read the CustomerAWSAccountId + LicenseArn form: it fails the call with HTTP 500', async () => {
      // moto's backend builds each result from record["CustomerIdentifier"]; a record in the 2026 form
      // (CustomerAWSAccountId + LicenseArn, no CustomerIdentifier) raises KeyError inside moto, which its
      // server answers as an HTML 500, even though this account id is seeded. Real AWS and our emulator take
      // this form. The worker classifies a 500 as retriable and would retry until the record's deadline
      // (~24 h); its clock jumps past the deadline after the failed call, so it gives up after one call.
      let clock = Date.now();
      onFailedCall = () => {
        clock += 2 * 24 * HOUR_MS;
      };
      const { worker: w, ledger } = worker(() => clock);
      const r = record('initech', 'api_calls', 9);
      await w.submit([r]);

      expect(calls).toHaveLength(1);
      // The record went out in the 2026 form, as prepare() builds it.
      expect(calls[0]?.body).toEqual({
        ProductCode: PRODUCT,
        UsageRecords: [
          {
            Timestamp: hourMs / 1000,
            Dimension: 'api_calls',
            Quantity: 9,
            CustomerAWSAccountId: '333333333333',
            LicenseArn: 'arn:aws:license-manager::333333333333:license:l-c3',
          },
        ],
      });
      expect(calls[0]?.output).toBeUndefined();
      expect(calls[0]?.error?.$metadata?.httpStatusCode).toBe(500);
      // werkzeug logs the traceback after it has sent the 500, so wait for it.
      await waitFor(() => (motoStderr.includes("KeyError: 'CustomerIdentifier'") ? true : undefined), {
        describe: () => `moto's stderr:\n${motoStderr}`,
      });
      expect((await ledger.accepted([r.recordId])).size).toBe(0);
      const dead = await deadLetters([r.recordId]);
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({
        reason: 'deadline_exceeded',
        attempts: 1,
        record: { customer: 'initech' },
      });
    });
  },
);
