/**
 * Redis behind the task: real Redis replication, with a replica held back and then promoted while usage
 * flows. The processor (the real CLI, in a child process) reaches Redis through one address that moves
 * to the new primary, as a managed failover does. The new primary lacks the last acknowledged batches
 * (and perhaps the latest fencing token): the processor must notice on its next batch, re-claim the
 * partition and replay from the checkpoint the new primary holds. Every window must come out exact.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, syntheticEvents } from '../../src/produce/synthetic.ts';
import { createRedis } from '../../src/redis/client.ts';
import { Keys } from '../../src/redis/keys.ts';
import { WindowStore } from '../../src/state/window-store.ts';
import { killHard, spawnMeterline, stopGracefully } from '../support/child.ts';
import { testKafka, uniqueId, waitFor } from '../support/harness.ts';
import {
  expectedFrozen,
  type TestPipeline,
  testPipeline,
  waitForFrozen,
  wrongRecords,
} from '../support/pipeline-env.ts';
import { startRedisServer } from '../support/redis-server.ts';
import { startTcpRelay, type TcpRelay } from '../support/tcp-relay.ts';

const PARTITIONS = 3;

describe('Redis failover to a replica that lags behind', () => {
  const kafka = testKafka();
  const stop: (() => Promise<void>)[] = [];
  let tp: TestPipeline | undefined;
  afterAll(async () => {
    for (const f of stop.reverse()) await f().catch(() => undefined);
    await tp?.cleanup(kafka);
  });

  it('replays what the new primary lacks: every window exact, no partition left fenced', async () => {
    const primary = await startRedisServer();
    stop.push(async () => {
      primary.proc.kill('SIGKILL');
    });
    // The replica follows the primary through a link the test can break.
    const link: TcpRelay = await startTcpRelay(primary.port);
    stop.push(() => link.close());
    const replica = await startRedisServer(['--replicaof', '127.0.0.1', String(link.port)]);
    stop.push(async () => {
      replica.proc.kill('SIGKILL');
    });
    const replicaAdmin = new Redis(replica.port, '127.0.0.1');
    replicaAdmin.on('error', () => undefined);
    stop.push(async () => replicaAdmin.disconnect());
    await waitFor(async () =>
      (await replicaAdmin.info('replication')).includes('master_link_status:up') ? true : undefined,
    );

    // The processor's one address for Redis; it moves at the failover.
    const front = await startTcpRelay(primary.port);
    stop.push(() => front.close());
    tp = testPipeline('failover', {
      tenants: Array.from({ length: 200 }, (_, i) => `tenant-${i}`),
      partitions: PARTITIONS,
      // The default idle timeout: a pause of the test's own producer must not close hours early.
      env: { REDIS_URL: `redis://127.0.0.1:${front.port}`, METERLINE_IDLE_TIMEOUT: '1m' },
    });
    await tp.createTopics(kafka);
    const events = [
      ...syntheticEvents({
        count: 90_000,
        customers: Array.from({ length: 200 }, (_, i) => `tenant-${i}`),
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: Date.now(),
        duplicateRate: 0.01,
        seed: 11,
        idPrefix: tp.run,
      }),
    ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
    const logFile = join(tmpdir(), `${uniqueId('failover')}.log`);
    const child = spawnMeterline(['processor'], tp.env, logFile);
    stop.push(() => killHard(child));

    const applied = async (port: number) => {
      const redis = createRedis(`redis://127.0.0.1:${port}`);
      // The old primary is killed during the test: its client's reconnect errors are expected.
      redis.on('error', () => undefined);
      try {
        const windows = new WindowStore(redis, new Keys(tp?.run as string), {
          dedupeTtlMs: 1,
          finalizedTtlMs: 1,
        });
        const times = await windows.partitionTimes(tp?.topics.usage as string, PARTITIONS);
        return times.reduce((n, t) => n + Number((t.checkpoint ?? -1n) + 1n), 0);
      } finally {
        redis.disconnect();
      }
    };

    const produced: RawEvent[] = [];
    const producing = (async () => {
      for (let i = 0; i < events.length; i += 1_500) {
        const chunk = events.slice(i, i + 1_500);
        await produceMessages(chunk.map(eventMessage), { kafka, topic: tp?.topics.usage as string });
        produced.push(...chunk);
        await sleep(100);
      }
    })();

    // Progress on the primary, replicated; then the link breaks and the primary moves on without it.
    await waitFor(async () => ((await applied(primary.port)) >= 10_000 ? true : undefined), {
      timeoutMs: 120_000,
    });
    link.refuse(true);
    link.cutAll();
    const frozenAt = await applied(replica.port);
    await waitFor(async () => ((await applied(primary.port)) >= frozenAt + 15_000 ? true : undefined), {
      timeoutMs: 120_000,
    });
    // Failover: the lagging replica becomes the primary, the address moves, the old primary is gone.
    await replicaAdmin.replicaof('NO', 'ONE');
    front.setTarget(replica.port);
    front.cutAll();
    const onPrimary = await applied(primary.port);
    primary.proc.kill('SIGKILL');
    // The new primary lacks acknowledged batches (it stopped at `frozenAt`).
    expect(frozenAt).toBeLessThan(onPrimary);
    await producing;

    const truth = expectedFrozen(produced);
    // Every offset of every partition is applied on the new primary: none stayed fenced or stuck.
    await waitFor(async () => ((await applied(replica.port)) >= produced.length ? true : undefined), {
      timeoutMs: 180_000,
      describe: () => `log ${logFile}`,
    });
    const billed = await waitForFrozen(kafka, tp.topics.submissions, truth, {
      timeoutMs: 180_000,
      describe: () => `log ${logFile}`,
    });
    expect(await stopGracefully(child)).toBe(0);
    const wrong = wrongRecords(billed, truth);
    expect(wrong, `${wrong.length} wrong; log ${logFile}`).toEqual([]);
    expect(billed).toEqual(truth);
    // The log says what happened and from where it replayed.
    expect(readFileSync(logFile, 'utf8')).toMatch(/Redis is behind this task/);
  }, 600_000);
});
