/**
 * Creates meterline's Kafka topics ahead of the pipeline: the Helm chart's optional pre-install /
 * pre-upgrade Job runs it from the image (`node deploy/image/create-topics.ts …`), since meterline has no
 * subcommand for it. meterline itself also creates missing topics at start-up (src/kafka/topics.ts), but
 * with the broker's default replication factor and fixed retentions; this script lets the operator set
 * both, and refuses a usage topic that would not keep its events long enough to replay them.
 *
 * The usage topic is the source of truth: after a Redis loss the processor replays it from the oldest hour
 * AWS can still accept (24 h for SaaS). Its retention must stay above that horizon; the floor here is 72 h
 * by default, which leaves two more days to notice and repair the loss.
 *
 * Topics that already exist are not changed. An existing usage topic whose retention.ms is below the floor
 * fails the run (exit 1), so the operator fixes it instead of finding out during a replay.
 *
 * The repartition step (events forwarded to their customer's partition) writes back to the usage topic,
 * so there is no separate repartition topic.
 */
import { parseArgs } from 'node:util';
// kafkajs is CommonJS, and Node's named-export detection misses this enum: take it from the default export.
import kafkajs from 'kafkajs';
import { createKafka } from '../../src/kafka/client.ts';
import { changelogTopic, ensureTopics, type TopicSpec } from '../../src/kafka/topics.ts';
import { createLogger } from '../../src/log.ts';

const { ConfigResourceTypes } = kafkajs;
const HOUR_MS = 3_600_000;
const TOPIC = /^[A-Za-z0-9._-]{1,249}$/;

const { values } = parseArgs({
  options: {
    brokers: { type: 'string', default: process.env.KAFKA_BROKERS ?? '' },
    usage: { type: 'string', default: process.env.METERLINE_TOPIC_USAGE ?? 'usage-events' },
    submissions: {
      type: 'string',
      default: process.env.METERLINE_TOPIC_SUBMISSIONS ?? 'metering-submissions',
    },
    failed: { type: 'string', default: process.env.METERLINE_TOPIC_FAILED ?? 'metering-failed' },
    changelog: {
      type: 'string',
      default: process.env.METERLINE_TOPIC_CHANGELOG ?? 'meterline-window-changelog',
    },
    partitions: { type: 'string', default: process.env.METERLINE_TOPIC_PARTITIONS ?? '6' },
    'replication-factor': { type: 'string', default: '-1' },
    'usage-retention-hours': { type: 'string', default: '168' },
    'submissions-retention-hours': { type: 'string', default: '168' },
    'failed-retention-hours': { type: 'string', default: '720' },
    'min-usage-retention-hours': { type: 'string', default: '72' },
  },
  strict: true,
});

const problems: string[] = [];
const intArg = (name: keyof typeof values, min: number): number => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min) problems.push(`--${name}: must be an integer ≥ ${min}`);
  return n;
};
const brokers = String(values.brokers)
  .split(',')
  .map((b) => b.trim())
  .filter(Boolean);
if (!brokers.length) problems.push('--brokers (or KAFKA_BROKERS): required');
for (const name of ['usage', 'submissions', 'failed', 'changelog'] as const) {
  if (!TOPIC.test(String(values[name]))) problems.push(`--${name}: not a valid Kafka topic name`);
}
const partitions = intArg('partitions', 1);
const replicationFactor = Number(values['replication-factor']);
if (!Number.isInteger(replicationFactor) || (replicationFactor < 1 && replicationFactor !== -1)) {
  problems.push('--replication-factor: an integer ≥ 1, or -1 for the broker default');
}
const floorHours = intArg('min-usage-retention-hours', 1);
const usageHours = intArg('usage-retention-hours', 1);
if (usageHours < floorHours) {
  problems.push(
    `--usage-retention-hours: ${usageHours} h is below the replay floor of ${floorHours} h (the usage topic is replayed after a Redis loss)`,
  );
}
const specs = [
  { topic: String(values.usage), numPartitions: partitions, hours: usageHours },
  {
    topic: String(values.submissions),
    numPartitions: partitions,
    hours: intArg('submissions-retention-hours', 1),
  },
  // One partition, as meterline makes it: the DLQ is small and read in order by `meterline dlq`.
  { topic: String(values.failed), numPartitions: 1, hours: intArg('failed-retention-hours', 1) },
];
if (problems.length) {
  process.stderr.write(`create-topics: ${problems.join('\n  ')}\n`);
  process.exit(2);
}

const logger = createLogger('meterline-create-topics');
const kafka = createKafka({ brokers, clientId: 'meterline-create-topics', logger });
const existing = await ensureTopics(
  kafka,
  specs
    .map(
      (s): TopicSpec => ({
        topic: s.topic,
        numPartitions: s.numPartitions,
        replicationFactor,
        configEntries: [{ name: 'retention.ms', value: String(s.hours * HOUR_MS) }],
      }),
    )
    .concat({
      // Compacted, no time-based retention: model state of a quiet customer must outlive any window.
      ...changelogTopic(String(values.changelog), partitions),
      replicationFactor,
    }),
);
const admin = kafka.admin();
await admin.connect();
try {
  for (const s of specs) {
    logger.info({ topic: s.topic, created: !existing.has(s.topic) }, 'topic ready');
  }

  // An existing usage topic keeps its settings: check that they cover the replay horizon.
  const usage = specs[0] as (typeof specs)[0];
  if (existing.has(usage.topic)) {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: usage.topic, configNames: ['retention.ms'] }],
    });
    const raw = described.resources[0]?.configEntries.find(
      (e) => e.configName === 'retention.ms',
    )?.configValue;
    const ms = Number(raw);
    // -1 is unlimited retention.
    if (raw !== undefined && ms !== -1 && ms < floorHours * HOUR_MS) {
      process.stderr.write(
        `create-topics: topic ${usage.topic} keeps ${ms / HOUR_MS} h (retention.ms=${raw}), below the replay floor of ${floorHours} h; raise it with kafka-configs --alter --add-config retention.ms=${usageHours * HOUR_MS}\n`,
      );
      process.exitCode = 1;
    }
  }
} finally {
  await admin.disconnect();
}
