/**
 * The window changelog must be able to rebuild Redis: one partition per usage partition (partition p
 * holds usage partition p's frozen hours), compacted and never deleted by time (a contract's usage state
 * must outlive any retention). Checked at the processor's start, every problem listed.
 */
import type { Admin } from 'kafkajs';
import kafkajs from 'kafkajs';
import { ConfigError, MeterlineError } from '../errors.ts';

export async function checkChangelogTopic(
  admin: Admin,
  o: { usageTopic: string; changelogTopic: string },
): Promise<void> {
  let usage: number;
  let changelog: number;
  let policy: string | undefined;
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [o.usageTopic, o.changelogTopic] });
    usage = topics.find((t) => t.name === o.usageTopic)?.partitions.length ?? 0;
    changelog = topics.find((t) => t.name === o.changelogTopic)?.partitions.length ?? 0;
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [
        { type: kafkajs.ConfigResourceTypes.TOPIC, name: o.changelogTopic, configNames: ['cleanup.policy'] },
      ],
    });
    policy = described.resources[0]?.configEntries.find(
      (e) => e.configName === 'cleanup.policy',
    )?.configValue;
  } catch (error) {
    throw new MeterlineError('kafka_error', `could not read the metadata of topic ${o.changelogTopic}`, {
      retriable: true,
      cause: error,
    });
  }
  const issues: string[] = [];
  if (changelog < usage) {
    issues.push(
      `it has ${changelog} partitions, fewer than the ${usage} of ${o.usageTopic}: give it as many (kafka-topics --alter --partitions ${usage})`,
    );
  }
  if (policy !== undefined && policy.trim() !== 'compact') {
    issues.push(
      `cleanup.policy=${policy}: it must be compact alone (deletion by time would lose the metering-model state of quiet customers)`,
    );
  }
  if (issues.length) throw new ConfigError(`window changelog topic ${o.changelogTopic}`, issues);
}
