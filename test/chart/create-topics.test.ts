/**
 * deploy/image/create-topics.ts, the script the chart's topics Job runs, against the real broker of the test
 * stack: it creates the topics with the retentions it is given, leaves existing ones alone, and refuses a usage
 * topic that keeps less than the replay floor. Needs KAFKA_BROKERS (the global setup provides it; a run with
 * METERLINE_NO_STACK=1 and no broker skips this file).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import kafkajs from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../deploy/image/create-topics.ts', import.meta.url));
const BROKERS = process.env.KAFKA_BROKERS;
const HOUR_MS = 3_600_000;
const suffix = `chart-topics-${process.pid}-${Date.now()}`;
const names = { usage: `${suffix}-usage`, submissions: `${suffix}-sub`, failed: `${suffix}-failed` };

function script(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, `--brokers=${BROKERS}`, ...args], (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

describe.skipIf(!BROKERS)('create-topics.ts (the chart topics Job)', () => {
  const kafka = new kafkajs.Kafka({
    brokers: (BROKERS ?? '').split(','),
    logLevel: kafkajs.logLevel.NOTHING,
  });
  const admin = kafka.admin();
  const made: string[] = [];

  afterAll(async () => {
    if (made.length) await admin.deleteTopics({ topics: made }).catch(() => {});
    await admin.disconnect();
  });

  async function retentionHours(topic: string): Promise<number> {
    const r = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
    });
    return Number(r.resources[0]?.configEntries[0]?.configValue) / HOUR_MS;
  }

  it('creates the three topics with the given partitions and retentions', async () => {
    await admin.connect();
    const args = [
      `--usage=${names.usage}`,
      `--submissions=${names.submissions}`,
      `--failed=${names.failed}`,
      '--partitions=3',
      '--usage-retention-hours=100',
      '--submissions-retention-hours=50',
      '--failed-retention-hours=200',
    ];
    const r = await script(args);
    made.push(names.usage, names.submissions, names.failed);
    expect(r.code, r.stderr).toBe(0);
    const meta = await admin.fetchTopicMetadata({ topics: Object.values(names) });
    const partitions = Object.fromEntries(meta.topics.map((t) => [t.name, t.partitions.length]));
    expect(partitions).toEqual({ [names.usage]: 3, [names.submissions]: 3, [names.failed]: 1 });
    expect(await retentionHours(names.usage)).toBe(100);
    expect(await retentionHours(names.submissions)).toBe(50);
    expect(await retentionHours(names.failed)).toBe(200);

    // Run again with other settings: existing topics are left as they are.
    const again = await script([...args, '--usage-retention-hours=300']);
    expect(again.code, again.stderr).toBe(0);
    expect(await retentionHours(names.usage)).toBe(100);
  });

  it('fails on an existing usage topic that keeps less than the replay floor', async () => {
    const short = `${suffix}-short`;
    await admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic: short,
          numPartitions: 1,
          configEntries: [{ name: 'retention.ms', value: String(10 * HOUR_MS) }],
        },
      ],
    });
    made.push(short);
    const r = await script([
      `--usage=${short}`,
      `--submissions=${names.submissions}`,
      `--failed=${names.failed}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `topic ${short} keeps 10 h (retention.ms=${10 * HOUR_MS}), below the replay floor of 72 h`,
    );
  });

  it('refuses a usage retention below the floor before touching Kafka', async () => {
    const topic = `${suffix}-never`;
    const r = await script([`--usage=${topic}`, '--usage-retention-hours=24']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--usage-retention-hours: 24 h is below the replay floor of 72 h');
    expect(await admin.listTopics()).not.toContain(topic);
  });
});
