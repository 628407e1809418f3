/**
 * Invariant 5: after a Redis loss the processor replays the usage topic from the oldest hour AWS can still
 * accept (the replay horizon). A usage topic that keeps less than that loses usage in the replay, silently,
 * so the processor checks the topic's effective settings at start-up and refuses to run on one that would.
 */
import type { Admin } from 'kafkajs';
// kafkajs is CommonJS, and Node's named-export detection misses this enum: take it from the default export.
import kafkajs from 'kafkajs';
import { ConfigError, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { HOUR_MS } from '../time/hours.ts';

/**
 * Kept beyond the replay horizon. A replay that starts right at the retention edge races the log cleaner
 * (the segment it seeks into can be deleted while it reads: the consumer then resets and skips usage),
 * time-based retention follows producer-set timestamps, so a producer whose clock runs behind has its
 * events deleted early, and an operator who finds a wrong hour in the next day's reconciliation (CloudTrail,
 * the daily report) still has its events to investigate. Two days, as the chart's topics Job requires (72 h
 * for SaaS), so a topic it accepts is one the processor accepts.
 */
export const RETENTION_MARGIN_MS = 48 * HOUR_MS;

/** The opt-out, named in the refusal. */
export const ALLOW_SHORT_RETENTION_KEY = 'METERLINE_ALLOW_SHORT_RETENTION';

/** The retention a usage topic needs for a replay that reaches `replayHorizonMs` back. */
export function requiredUsageRetentionMs(replayHorizonMs: number): number {
  return replayHorizonMs + RETENTION_MARGIN_MS;
}

const hours = (ms: number) => `${Math.round((ms / HOUR_MS) * 100) / 100} h`;

/**
 * Reads the usage topic's effective retention.ms and cleanup.policy (the topic's override, else the
 * broker's default: describeConfigs resolves it) and throws a ConfigError if a replay could not read back
 * to the horizon. retention.bytes cannot be judged without knowing the traffic: a cap only warns.
 */
export async function checkUsageRetention(
  admin: Admin,
  o: { topic: string; replayHorizonMs: number; logger: Logger },
): Promise<void> {
  const needMs = requiredUsageRetentionMs(o.replayHorizonMs);
  let entries: Map<string, string>;
  try {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [
        {
          type: kafkajs.ConfigResourceTypes.TOPIC,
          name: o.topic,
          configNames: ['retention.ms', 'retention.bytes', 'cleanup.policy'],
        },
      ],
    });
    entries = new Map(
      (described.resources[0]?.configEntries ?? []).map((e) => [e.configName, e.configValue]),
    );
  } catch (error) {
    const type = (error as { type?: unknown }).type;
    // Without the right to read it, nothing can be judged: say what to grant, or how to skip the check.
    if (typeof type === 'string' && type.includes('AUTHORIZATION')) {
      throw new ConfigError(`usage topic ${o.topic}`, [
        `its configuration cannot be read (${type}): allow DescribeConfigs on the topic, or set ${ALLOW_SHORT_RETENTION_KEY}=true to start without checking its retention`,
      ]);
    }
    throw new MeterlineError('kafka_error', `could not read the configuration of topic ${o.topic}`, {
      retriable: true,
      cause: error,
    });
  }

  const need = `${hours(needMs)} a replay after a Redis loss needs (the ${hours(o.replayHorizonMs)} AWS still accepts + a ${hours(RETENTION_MARGIN_MS)} margin)`;
  const optOut = `or set ${ALLOW_SHORT_RETENTION_KEY}=true to start anyway`;
  const issues: string[] = [];
  // Compaction keeps only the newest event per key (the customer): the rest of the usage is gone.
  const policy = entries.get('cleanup.policy') ?? 'delete';
  if (policy.split(',').some((p) => p.trim() === 'compact')) {
    issues.push(
      `cleanup.policy=${policy}: compaction keeps one event per customer, so a replay loses usage; use cleanup.policy=delete with retention.ms ≥ ${needMs}, ${optOut}`,
    );
  }
  const raw = entries.get('retention.ms');
  const ms = Number(raw);
  // -1: kept for ever.
  if (raw !== undefined && Number.isFinite(ms) && ms !== -1 && ms < needMs) {
    issues.push(
      `retention.ms=${raw} (${hours(ms)}) is shorter than the ${need}: raise it (kafka-configs --alter --entity-type topics --entity-name ${o.topic} --add-config retention.ms=${needMs}), ${optOut}`,
    );
  }
  if (issues.length) throw new ConfigError(`usage topic ${o.topic}`, issues);

  const bytes = Number(entries.get('retention.bytes') ?? -1);
  if (Number.isFinite(bytes) && bytes !== -1) {
    o.logger.warn(
      { topic: o.topic, retentionBytes: bytes, needMs },
      `the usage topic also deletes by size (retention.bytes per partition): make sure a partition holds ${hours(needMs)} of usage at peak, or a replay after a Redis loss misses the oldest of it`,
    );
  }
}
