/**
 * Issue 20: a user's `meterline processor` and `meterline worker`, started side by side on one host with no
 * port settings, both come up (each role has its own default ops port: 9464 and 9465), and keep coming up
 * after being kill -9'd together several times; every hour is billed exactly once, with its exact sum.
 * (Before, both took 9464: the worker died at start with EADDRINUSE every time and no hour was billed.)
 */
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { WindowStore } from '../../../src/state/window-store.ts';
import { killHard, spawnMeterline, stopGracefully } from '../../support/child.ts';
import { cli } from '../../support/cli.ts';
import { stackEnv, testKafka, uniqueId, waitFor } from '../../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();
const KILLS = 3;
const PARTITIONS = 3;
/** The documented defaults: processor 9464, worker 9465. */
const PORTS = { processor: 9464, worker: 9465 } as const;

let tp: TestPipeline | undefined;
let clash: TestPipeline | undefined;
let emulator: RunningEmulator | undefined;
const children: ChildProcess[] = [];
const redis = createRedis(stackEnv().redisUrl);

afterAll(async () => {
  for (const c of children) await killHard(c);
  await emulator?.close();
  await tp?.cleanup(kafka);
  await clash?.cleanup(kafka);
  redis.disconnect();
});

async function portFree(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)));
  });
}

async function ready(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

describe('processor and worker side by side, no port settings', () => {
  it(`both come up, through ${KILLS} kill -9s of both, and every hour is billed exactly`, async () => {
    for (const port of Object.values(PORTS)) {
      expect(await portFree(port), `port ${port} is taken on this host: this test needs it free`).toBe(true);
    }
    emulator = await startEmulator({ customers: Object.keys(TEST_CUSTOMERS).map(awsIdOf) });
    tp = testPipeline('side-by-side', {
      partitions: PARTITIONS,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    // As a user runs them: no METERLINE_OPS_PORT (the harness sets 0 for its in-process pipelines).
    // No spans: their record ids repeat across runs in the same hour, and the tracing test reads Jaeger.
    const childEnv = { ...tp.env, METERLINE_OPS_PORT: '', OTEL_SDK_DISABLED: 'true' };
    await tp.createTopics(kafka);
    // In event-time order, as live traffic comes: a kill may not turn on-time usage into late usage.
    const events = [
      ...syntheticEvents({
        count: 60_000,
        customers: Object.keys(TEST_CUSTOMERS),
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: Date.now(),
        duplicateRate: 0.02,
        seed: 20,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const want = expectedAccepted(events);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage, batchSize: 2_000 });
    const log = join(tmpdir(), `${uniqueId('side-by-side')}.log`);
    const em = emulator;
    const billed = () => acceptedAtAws(em).size;
    const windows = new WindowStore(redis, new Keys(tp.run), { dedupeTtlMs: 1, finalizedTtlMs: 1 });
    const applied = async () =>
      (await windows.partitionTimes(tp?.topics.usage as string, PARTITIONS)).reduce(
        (n, t) => n + Number((t.checkpoint ?? -1n) + 1n),
        0,
      );
    const describeState = async () =>
      `${await applied()} of ${events.length} events applied, ${billed()} of ${want.size} hours billed; logs in ${log}`;

    const start = async () => {
      const processor = spawnMeterline(['processor'], childEnv, log);
      const worker = spawnMeterline(['worker'], childEnv, log);
      children.push(processor, worker);
      // Both up: each answers /readyz on its own default port, and neither has exited.
      await waitFor(
        async () => {
          for (const c of [processor, worker]) {
            if (c.exitCode !== null)
              throw new Error(`a child exited with ${c.exitCode}: ${await describeState()}`);
          }
          return (await ready(PORTS.processor)) && (await ready(PORTS.worker)) ? true : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 250, describe: describeState },
      );
      return { processor, worker };
    };

    let pair = await start();
    const progress: string[] = [];
    const billedAtKill: number[] = [];
    for (let kill = 0; kill < KILLS; kill++) {
      // Killed once this pair has done something (or everything is done), with whatever is in flight.
      const before = (await applied()) + billed();
      await waitFor(
        async () => ((await applied()) + billed() > before || billed() >= want.size ? true : undefined),
        { timeoutMs: 180_000, intervalMs: 100, describe: describeState },
      );
      await Promise.all([killHard(pair.processor), killHard(pair.worker)]);
      billedAtKill.push(billed());
      progress.push(await describeState());
      pair = await start();
    }
    await waitFor(() => (billed() >= want.size ? true : undefined), {
      timeoutMs: 300_000,
      intervalMs: 1_000,
      describe: describeState,
    });
    expect(await stopGracefully(pair.processor)).toBe(0);
    expect(await stopGracefully(pair.worker)).toBe(0);
    // The first kill hit work in flight, not a finished run.
    expect(billedAtKill[0], progress.join('\n')).toBeLessThan(want.size);
    expect(acceptedAtAws(em), progress.join('\n')).toEqual(want);
    expect(em.state.snapshot().duplicates).toBe(0);
    expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
  }, 900_000);

  it('a port in use is refused with the key to set', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '0.0.0.0', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      clash = testPipeline('port-clash');
      const r = await cli(['worker'], {
        ...clash.env,
        METERLINE_OPS_PORT: String(port),
        OTEL_SDK_DISABLED: 'true',
      });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`port ${port} is in use on this host`);
      expect(r.stderr).toContain('set METERLINE_OPS_PORT to a free port');
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});
