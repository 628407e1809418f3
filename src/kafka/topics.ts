/** Creates the pipeline's topics when missing. Topic settings come from config, never broker defaults. */
import type { Kafka } from 'kafkajs';

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  configEntries?: { name: string; value: string }[];
  /** -1 (default): the broker's default. */
  replicationFactor?: number;
}

/** Creates the topics that do not exist yet (existing ones are left as they are); returns those that did. */
export async function ensureTopics(kafka: Kafka, specs: readonly TopicSpec[]): Promise<Set<string>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = specs.filter((s) => !existing.has(s.topic));
    if (missing.length) {
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((s) => ({ replicationFactor: -1, ...s })),
      });
    }
    return existing;
  } finally {
    await admin.disconnect();
  }
}

const WEEK_MS = String(7 * 24 * 3_600_000);

/**
 * The usage topic keeps a week, so a Redis loss can be replayed from Kafka: well above what the processor's
 * start-up check requires (src/kafka/usage-retention.ts: 72 h for SaaS).
 */
export function usageTopic(topic: string, partitions: number): TopicSpec {
  return { topic, numPartitions: partitions, configEntries: [{ name: 'retention.ms', value: WEEK_MS }] };
}

/**
 * The window changelog: compacted, one partition per usage partition (the processor writes partition p's
 * frozen hours and model state to partition p), kept until compaction replaces a key.
 */
export function changelogTopic(topic: string, partitions: number): TopicSpec {
  return {
    topic,
    numPartitions: partitions,
    configEntries: [
      { name: 'cleanup.policy', value: 'compact' },
      // A frozen hour of a large partition is one message: room for tens of thousands of records.
      { name: 'max.message.bytes', value: String(16 * 1024 * 1024) },
    ],
  };
}

/** The four pipeline topics. */
export function pipelineTopics(t: {
  usage: string;
  submissions: string;
  failed: string;
  changelog: string;
  partitions: number;
}): TopicSpec[] {
  return [
    usageTopic(t.usage, t.partitions),
    {
      topic: t.submissions,
      numPartitions: t.partitions,
      configEntries: [{ name: 'retention.ms', value: WEEK_MS }],
    },
    {
      topic: t.failed,
      numPartitions: 1,
      configEntries: [{ name: 'retention.ms', value: String(30 * 24 * 3_600_000) }],
    },
    changelogTopic(t.changelog, t.partitions),
  ];
}
