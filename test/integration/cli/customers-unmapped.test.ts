/**
 * `meterline customers --unmapped`: the usage the commit stage holds for tenants without an AWS identity,
 * per tenant, with its hours, its record count, since when it is held and when it will be dead-lettered
 * (the hour's AWS deadline minus the submit margin). Real held usage: a pipeline closes two hours in which
 * two unmapped tenants and a mapped one used the product; the CLI runs as a child process.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { acceptanceDeadline } from '../../../src/metering/aws-window.ts';
import { eventMessage, produceMessages } from '../../../src/produce/producer.ts';
import type { RawEvent } from '../../../src/produce/synthetic.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { HOUR_MS, hourIso, hourStart } from '../../../src/time/hours.ts';
import { cli } from '../../support/cli.ts';
import { stackEnv, testKafka, testLogger, waitFor } from '../../support/harness.ts';
import { TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();

describe('meterline customers --unmapped', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await pipeline?.stop();
    redis.disconnect();
    await tp?.cleanup(kafka);
  });

  it('lists held usage per tenant with its hours, records, hold time and dead-letter time', async () => {
    tp = testPipeline('unmapped', { customers: { acme: TEST_CUSTOMERS.acme } });
    const H = hourStart(Date.now()) - 2 * HOUR_MS;
    // ghost: api_calls in both hours; stray: both dimensions in the second hour; acme is mapped.
    const uses: [customer: string, dimension: string, hour: number][] = [
      ['ghost', 'api_calls', H],
      ['ghost', 'api_calls', H + HOUR_MS],
      ['stray', 'api_calls', H + HOUR_MS],
      ['stray', 'jobs', H + HOUR_MS],
      ['acme', 'api_calls', H],
      ['acme', 'api_calls', H + HOUR_MS],
    ];
    const events: RawEvent[] = uses.flatMap(([customer, dimension, hour], i) =>
      [1, 2].map((k) => ({
        id: `${tp?.run}-${i}-${k}`,
        customer,
        dimension,
        quantity: k,
        timestamp: new Date(hour + k * 60_000).toISOString(),
      })),
    );
    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    const startedAt = Date.now();
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: false });

    // Held records: one per (tenant, dimension, hour) of the unmapped tenants.
    const unmapped = uses.filter(([c]) => c !== 'acme');
    const keys = new Keys(tp.run);
    const held = async () => {
      let n = 0;
      for (let partition = 0; partition < 3; partition++)
        n += await redis.hlen(keys.partition({ topic: tp?.topics.usage as string, partition }).held());
      return n;
    };
    await waitFor(async () => ((await held()) === unmapped.length ? true : undefined), {
      timeoutMs: 60_000,
      describe: async () => `${await held()} of ${unmapped.length} records held`,
    });
    const listedBefore = Date.now();

    const json = await cli(['customers', '--unmapped', '-o', 'json'], tp.env);
    expect(json.stderrLines).toEqual([]);
    expect(json.code).toBe(0);
    const rows = JSON.parse(json.stdout) as {
      tenant: string;
      hours: string[];
      records: number;
      heldSince: string;
      deadLetterAt: string;
    }[];
    const margin = tp.config().window.submitMarginMs;
    const expected = ['ghost', 'stray'].map((tenant) => {
      const mine = unmapped.filter(([c]) => c === tenant);
      const hours = [...new Set(mine.map(([, , h]) => h))].sort((a, b) => a - b);
      return {
        tenant,
        hours: hours.map(hourIso),
        records: mine.length,
        deadLetterAt: new Date(
          acceptanceDeadline('BatchMeterUsage', hours[0] as number) - margin,
        ).toISOString(),
      };
    });
    expect(rows.map(({ heldSince: _, ...r }) => r)).toEqual(expected);
    for (const r of rows) {
      expect(Date.parse(r.heldSince)).toBeGreaterThanOrEqual(startedAt);
      expect(Date.parse(r.heldSince)).toBeLessThanOrEqual(listedBefore);
    }

    const table = await cli(['customers', '--unmapped'], tp.env);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^tenant\s+hours\s+records\s+held since\s+dead-lettered at$/);
    expect(lines.find((l) => l.startsWith('stray'))).toContain(expected[1]?.deadLetterAt);
    expect(lines.at(-1)).toBe('4 record(s) held for 2 tenant(s)');

    const yaml = await cli(['customers', '--unmapped', '-o', 'yaml', '--timeout', '2s'], tp.env);
    expect(yaml.code).toBe(0);
    expect(yaml.stdout).toContain('tenant: ghost');
  }, 180_000);
});
