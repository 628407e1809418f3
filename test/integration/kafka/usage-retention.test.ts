/**
 * Invariant 5: after a Redis loss the processor replays the usage topic from the oldest hour AWS still
 * accepts, so a usage topic that keeps less than that loses usage silently in the replay. The processor
 * refuses to start on one (its effective retention.ms, the broker's default included) unless the operator
 * opts out with METERLINE_ALLOW_SHORT_RETENTION=true; other roles do not read the usage topic and start.
 */
import type { Admin } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { loadConfig } from '../../../src/config/config.ts';
import { ConfigError } from '../../../src/errors.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { testKafka, testLogger, writeTempJson } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();

describe('usage topic retention at processor start-up', () => {
  const pipelines: TestPipeline[] = [];
  const running: RunningPipeline[] = [];
  let admin: Admin;
  beforeAll(async () => {
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    for (const p of running) await p.stop();
    await admin?.disconnect();
    for (const tp of pipelines) await tp.cleanup(kafka);
  });

  function setup(label: string, env: Record<string, string> = {}): TestPipeline {
    const tp = testPipeline(label, { env });
    pipelines.push(tp);
    return tp;
  }

  /** The usage topic as the operator made it; `undefined` retention: no override, the broker's default. */
  async function createUsage(tp: TestPipeline, configEntries: { name: string; value: string }[]) {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic: tp.topics.usage, numPartitions: 3, configEntries }],
    });
  }

  async function start(
    tp: TestPipeline,
    roles: { processor: boolean; worker: boolean } = { processor: true, worker: false },
  ): Promise<RunningPipeline | Error> {
    const config = tp.config([
      ...(roles.processor ? ['processor' as const] : []),
      ...(roles.worker ? ['worker' as const] : []),
    ]);
    try {
      const p = await startPipeline(config, testLogger(), roles);
      running.push(p);
      return p;
    } catch (error) {
      return error as Error;
    }
  }

  async function stop(p: RunningPipeline | Error) {
    if (p instanceof Error) return;
    await p.stop();
    running.splice(running.indexOf(p), 1);
  }

  it('refuses a usage topic that keeps 1 h, naming the topic, its retention and what the replay needs', async () => {
    const tp = setup('retention-short');
    await createUsage(tp, [{ name: 'retention.ms', value: String(HOUR_MS) }]);
    const result = await start(tp);
    expect(result).toBeInstanceOf(ConfigError);
    const message = (result as Error).message;
    expect(message).toContain(`usage topic ${tp.topics.usage}`);
    expect(message).toContain(`retention.ms=${HOUR_MS} (1 h)`);
    expect(message).toContain('72 h');
    expect(message).toContain('METERLINE_ALLOW_SHORT_RETENTION=true');
  });

  it('refuses one just under the need too, and a compacted one (compaction keeps one event per customer)', async () => {
    const under = setup('retention-71h');
    await createUsage(under, [{ name: 'retention.ms', value: String(71 * HOUR_MS) }]);
    expect(await start(under)).toBeInstanceOf(ConfigError);

    const compacted = setup('retention-compact');
    await createUsage(compacted, [
      { name: 'cleanup.policy', value: 'compact' },
      { name: 'retention.ms', value: '-1' },
    ]);
    const result = await start(compacted);
    expect(result).toBeInstanceOf(ConfigError);
    expect((result as Error).message).toContain('cleanup.policy=compact');
  });

  it('starts with the topics meterline creates itself (a week)', async () => {
    const tp = setup('retention-default');
    const p = await start(tp);
    expect(p).not.toBeInstanceOf(Error);
    expect((p as RunningPipeline).processor).toBeDefined();
    await stop(p);
  });

  it("starts on a topic without an override (the broker's default of 168 h) and on an unlimited one", async () => {
    const inherited = setup('retention-broker');
    await createUsage(inherited, []);
    const a = await start(inherited);
    expect(a).not.toBeInstanceOf(Error);
    await stop(a);

    const unlimited = setup('retention-infinite');
    await createUsage(unlimited, [{ name: 'retention.ms', value: '-1' }]);
    const b = await start(unlimited);
    expect(b).not.toBeInstanceOf(Error);
    await stop(b);
  });

  it('container mode needs only its 6 h window plus the margin: 60 h starts there and is refused for SaaS', async () => {
    const container = setup('retention-container', {
      METERLINE_METERING_MODE: 'container',
      // The test default (12 h) does not fit MeterUsage's 6 h window; a user's default (3 h) does.
      METERLINE_WINDOW_MAX_DELAY: '3h',
    });
    await createUsage(container, [{ name: 'retention.ms', value: String(60 * HOUR_MS) }]);
    const p = await start(container);
    expect(p).not.toBeInstanceOf(Error);
    await stop(p);

    const saas = setup('retention-saas-60h');
    await createUsage(saas, [{ name: 'retention.ms', value: String(60 * HOUR_MS) }]);
    const refused = await start(saas);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toContain('retention.ms=216000000 (60 h)');
  });

  it('starts on the short topic when the operator opts out, and the worker alone never checks it', async () => {
    const optedOut = setup('retention-optout', { METERLINE_ALLOW_SHORT_RETENTION: 'true' });
    await createUsage(optedOut, [{ name: 'retention.ms', value: String(HOUR_MS) }]);
    const p = await start(optedOut);
    expect(p).not.toBeInstanceOf(Error);
    expect((p as RunningPipeline).processor).toBeDefined();
    await stop(p);

    const workerOnly = setup('retention-worker');
    await createUsage(workerOnly, [{ name: 'retention.ms', value: String(HOUR_MS) }]);
    const w = await start(workerOnly, { processor: false, worker: true });
    expect(w).not.toBeInstanceOf(Error);
    expect((w as RunningPipeline).worker).toBeDefined();
    await stop(w);
  });
});

describe('METERLINE_ALLOW_SHORT_RETENTION', () => {
  const env = {
    KAFKA_BROKERS: 'a:9092',
    REDIS_URL: 'redis://127.0.0.1:6379',
    METERLINE_PLAN: writeTempJson('plan.json', {
      productCode: 'prod-x',
      dimensions: [{ name: 'api_calls' }],
    }),
  };

  it('is off by default, and takes only true or false', () => {
    expect(loadConfig(['processor'], env).allowShortUsageRetention).toBe(false);
    expect(
      loadConfig(['processor'], { ...env, METERLINE_ALLOW_SHORT_RETENTION: 'true' }).allowShortUsageRetention,
    ).toBe(true);
    expect(() => loadConfig(['processor'], { ...env, METERLINE_ALLOW_SHORT_RETENTION: 'yes' })).toThrow(
      /METERLINE_ALLOW_SHORT_RETENTION: /,
    );
  });
});
