/**
 * Invariant 1 when Redis's answer is lost: a proxy between the processor (the real CLI, in a child
 * process) and Redis loses the reply of the batch script 20 times at random moments while usage flows,
 * half of them with a reset connection and half on a mute one. The script ran each time; the processor
 * cannot know it did. Kafka re-delivers (often a longer batch than the one that landed), and every window
 * must still come out exact: nothing lost past the checkpoint, nothing counted twice.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, seededRandom, syntheticEvents } from '../../src/produce/synthetic.ts';
import { killHard, spawnMeterline, stopGracefully } from '../support/child.ts';
import { stackEnv, testKafka, uniqueId, waitFor } from '../support/harness.ts';
import { expectedFrozen, testPipeline, waitForFrozen, wrongRecords } from '../support/pipeline-env.ts';
import { startRedisFaultProxy } from '../support/redis-fault-proxy.ts';

const LOSSES = 20;

describe('lost Redis replies', () => {
  it(`counts every event once through ${LOSSES} lost replies of the batch script`, async () => {
    const kafka = testKafka();
    const proxy = await startRedisFaultProxy(stackEnv().redisUrl, 'applyBatch');
    // The default idle timeout: with the harness's 2 s, a pause of the test's own producer would let every
    // hour close before the rest of its usage arrives (carried forward, by design).
    const tp = testPipeline('lost-reply', {
      tenants: Array.from({ length: 300 }, (_, i) => `tenant-${i}`),
      partitions: 3,
      env: { REDIS_URL: proxy.url, METERLINE_IDLE_TIMEOUT: '1m' },
    });
    const seed = Number(process.env.LOST_REPLY_SEED ?? Date.now() % 100_000);
    const random = seededRandom(seed);
    const logFile = join(tmpdir(), `${uniqueId('lost-reply')}.log`);
    let child: ChildProcess | undefined;
    try {
      const events = [
        ...syntheticEvents({
          count: 400_000,
          customers: Array.from({ length: 300 }, (_, i) => `tenant-${i}`),
          dimensions: ['api_calls', 'jobs'],
          hours: 3,
          nowMs: Date.now(),
          duplicateRate: 0.01,
          seed,
          idPrefix: tp.run,
        }),
      ].sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));
      await tp.createTopics(kafka);

      // Usage flows, in small sends, until every loss has happened.
      const produced: RawEvent[] = [];
      const send = async (i: number) => {
        const chunk = events.slice(i, i + 500);
        await produceMessages(chunk.map(eventMessage), { kafka, topic: tp.topics.usage, batchSize: 500 });
        produced.push(...chunk);
      };
      // The processor starts once usage is on every partition, as in the crash test: this test is about lost
      // replies. A processor that starts on empty topics can have an hour closed right after its first batch
      // (a close boundary read before that batch landed): stale-boundary.test.ts pins that down.
      await send(0);
      child = spawnMeterline(['processor'], tp.env, logFile);
      const producing = (async () => {
        for (let i = 500; i < events.length && proxy.lost < LOSSES; i += 500) {
          await sleep(20);
          await send(i);
        }
      })();
      for (let n = 0; n < LOSSES; n++) {
        await sleep(Math.floor(random() * 400));
        proxy.loseNextReply(n % 2 === 0 ? 'reset' : 'silent');
        await waitFor(() => (proxy.lost > n ? true : undefined), {
          timeoutMs: 60_000,
          describe: () => `loss ${n + 1} of ${LOSSES} never happened (seed ${seed}; log ${logFile})`,
        });
      }
      await producing;
      expect(proxy.lost).toBe(LOSSES);

      const truth = expectedFrozen(produced);
      const billed = await waitForFrozen(kafka, tp.topics.submissions, truth, {
        describe: () => `seed ${seed}; log ${logFile}`,
      });
      expect(await stopGracefully(child)).toBe(0);
      const wrong = wrongRecords(billed, truth);
      expect(wrong, `seed ${seed}; ${wrong.length} wrong; log ${logFile}`).toEqual([]);
      expect(billed).toEqual(truth);
      // The losses did land after Redis ran the script: the processor learnt it from Redis's checkpoint.
      expect(readFileSync(logFile, 'utf8')).toContain('a lost reply');
    } finally {
      if (child) await killHard(child);
      await proxy.close();
      await tp.cleanup(kafka);
    }
  }, 600_000);
});
