/**
 * `reconcile internal` after the faults the pipeline is built to survive (issue 18, "what must be shown"
 * 1): AWS storming (throttling, 5xx, unprocessed records at 10 TPS), the whole `meterline run` process
 * kill -9'd twice mid-stream and restarted, then every Redis key of the pipeline wiped (windows, dedupe
 * ids, ledger) while usage flows. Every row is balanced, its frozen, emitted and (where the ledger still
 * has it) accepted quantity equal to the produced events' own sums.
 */

import type { ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { createKafka } from '../../../src/kafka/client.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import { collectInternal } from '../../../src/reconcile/collect.ts';
import { reconcileInternal } from '../../../src/reconcile/internal.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { HOUR_MS, hourStart } from '../../../src/time/hours.ts';
import { killHard, spawnMeterline, stopGracefully } from '../../support/child.ts';
import { deleteKeys, stackEnv, testKafka, testLogger, waitFor } from '../../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  expectedFrozen,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);

describe('reconcile internal after storm, kill and wipe', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let child: ChildProcess | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    if (child) await killHard(child);
    await emulator?.close();
    await tp?.cleanup(kafka);
    redis.disconnect();
  });

  it('balances every row', async () => {
    emulator = await startEmulator({
      customers: tenants.map(awsIdOf),
      tps: 10,
      faults: { seed: 18, throttleRate: 0.2, errorRate: 0.05, unprocessedRate: 0.1 },
    });
    tp = testPipeline('reconcile-faults', {
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url, METERLINE_WINDOW_MAX_DELAY: '3h' },
    });
    const now = Date.now();
    const all = [
      ...syntheticEvents({
        count: 4_000,
        customers: tenants,
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: now,
        duplicateRate: 0.03,
        seed: 81,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const lastHour = hourStart(now) - HOUR_MS;
    const before = all.filter((e) => Date.parse(String(e.timestamp)) < lastHour);
    const after = all.filter((e) => Date.parse(String(e.timestamp)) >= lastHour);
    const accepted = () => acceptedAtAws(emulator);
    const log = join(tmpdir(), `${tp.run}.log`);
    const env = tp.env;

    await tp.createTopics(kafka);
    await produceMessages(before.map(eventMessage), { kafka, topic: tp.topics.usage });
    const firstPart = expectedAccepted(before);
    // Killed twice with work in flight, restarted each time.
    for (const atLeast of [1, Math.ceil(firstPart.size / 2)]) {
      child = spawnMeterline(['run'], env, log);
      await waitFor(() => (accepted().size >= atLeast ? true : undefined), { timeoutMs: 120_000 });
      await killHard(child);
    }
    child = spawnMeterline(['run'], env, log);
    await waitFor(() => (accepted().size >= firstPart.size ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().size} of ${firstPart.size} accepted`,
    });

    // Every key of the pipeline is gone, the ledger with it; usage keeps coming.
    await deleteKeys(tp.run);
    await produceMessages(after.map(eventMessage), { kafka, topic: tp.topics.usage });
    const expected = expectedAccepted(all);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 180_000,
      describe: () => `${accepted().size} of ${expected.size} accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(await stopGracefully(child)).toBe(0);
    child = undefined;

    const config = tp.config();
    const inputs = await collectInternal({
      config,
      kafka: createKafka({ ...config.kafka, logger: testLogger() }),
      redis,
      keys: new Keys(config.redis.prefix),
      fromMs: hourStart(now) - 3 * HOUR_MS,
      toMs: hourStart(now) + HOUR_MS,
      nowMs: Date.now(),
      measure: true,
    });
    const rows = reconcileInternal(inputs);
    const truth = expectedFrozen(all);
    expect(rows.filter((r) => r.status !== 'balanced')).toEqual([]);
    expect(new Map(rows.map((r) => [r.recordId, r.frozen]))).toEqual(truth);
    for (const r of rows) {
      expect([r.recordId, r.measured, r.emitted], r.recordId).toEqual([
        r.recordId,
        truth.get(r.recordId),
        truth.get(r.recordId),
      ]);
      // Accepted per the ledger, or per the worker's offsets when the ledger went with Redis.
      if (r.accepted === undefined) expect(r.notes, r.recordId).toEqual(['ledger_lost_with_redis']);
      else expect(r.accepted, r.recordId).toBe(truth.get(r.recordId));
    }
    // The wipe took ledger entries of records accepted before it: the offsets account for them.
    expect(rows.some((r) => r.notes?.includes('ledger_lost_with_redis'))).toBe(true);
  }, 480_000);
});
