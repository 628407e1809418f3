/**
 * Phase (e) of `npm run bench`: the processor's peak RSS on a dataset several times larger than phase (b)'s
 * (default 10M messages), to show whether memory grows with the events seen. The same seeded generator
 * (dataset.ts, same hours, customers and resend rate) produces it on its own fresh topic, and the processor
 * runs exactly as in phase (b): bench.ts hands over its own produce and processor functions, which this
 * module runs on a copy of the run's context with the leg's topic, Redis prefix and groups. The topic,
 * group and keys go as soon as the leg is measured (10M messages hold ~1.5 GB of log and ~200 MB of Redis).
 * Goals: peak RSS ≤ 300 MB at both sizes, and the larger within 10 % of the smaller.
 */
import type { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import type { Dataset, Expected } from './dataset.ts';
import { deleteKeysUnder } from './phase.ts';
import { atMost, fmt, type Goal } from './report-format.ts';

export const RSS_GOAL_MB = 300;
export const RSS_GROWTH_GOAL = 1.1;

/** What the leg changes in the run's context: the rest (broker, Redis, pids, logs) is shared. */
interface LegContext {
  runId: string;
  topic: string;
  expected: Expected;
  timeoutMs: number;
  profileDir: string | undefined;
  kafka: Kafka;
  redis: Redis;
}

export interface ScaleLeg<R, P> {
  events: number;
  produce: R;
  processor: P;
}

export async function runRssScale<
  C extends LegContext,
  R extends { messagesPerSec: number },
  P extends { eventsPerSec: number; peakRssMb: number },
>(
  ctx: C,
  o: {
    /** The dataset's messages (its own `expected` counts them only as they are generated). */
    events: number;
    dataset: Dataset;
    partitions: number;
    produce: (leg: C, dataset: Dataset, messages: number) => Promise<R>;
    runProcessor: (leg: C) => Promise<P>;
    say: (line: string) => void;
  },
): Promise<ScaleLeg<R, P>> {
  const runId = `${ctx.runId}-rss`;
  const events = o.events;
  const leg: C = {
    ...ctx,
    runId,
    topic: `${runId}-usage`,
    expected: o.dataset.expected,
    timeoutMs: 120_000 + events,
    // One CPU profile per run: phase (b)'s.
    profileDir: undefined,
  };
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic: leg.topic, numPartitions: o.partitions, replicationFactor: 1 }],
    });
    o.say(`  produce ${events.toLocaleString('en-US')} messages to ${leg.topic}`);
    const produce = await o.produce(leg, o.dataset, events);
    const processor = await o.runProcessor(leg);
    o.say(
      `  ${fmt(processor.eventsPerSec)} events/s, peak RSS ${fmt(processor.peakRssMb)} MB ` +
        `(produced at ${fmt(produce.messagesPerSec)} msg/s)`,
    );
    return { events, produce, processor };
  } finally {
    // Everything the leg made is named after its run id: topics, the processor's group, Redis keys.
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${runId}-`));
    if (topics.length) await admin.deleteTopics({ topics, timeout: 60_000 }).catch(() => undefined);
    await admin.deleteGroups([`${runId}-processor`]).catch(() => undefined);
    await admin.disconnect();
    await deleteKeysUnder(ctx.redis, runId);
  }
}

/** The goals: each size's peak RSS, and the growth from the smaller to the larger. */
export function rssGoals(
  small: { events: number; peakRssMb: number } | null,
  large: { events: number; peakRssMb: number } | null,
): Goal[] {
  const label = (n: number) => `${(n / 1e6).toLocaleString('en-US', { maximumFractionDigits: 1 })}M`;
  return [
    atMost(
      `processor peak RSS, MB (${small ? label(small.events) : 'phase b'} events)`,
      RSS_GOAL_MB,
      small?.peakRssMb ?? null,
      ' MB',
    ),
    atMost(
      `processor peak RSS, MB (${large ? label(large.events) : 'phase e'} events)`,
      RSS_GOAL_MB,
      large?.peakRssMb ?? null,
      ' MB',
    ),
    atMost(
      `peak RSS growth, ${large ? label(large.events) : 'e'} / ${small ? label(small.events) : 'b'} events`,
      RSS_GROWTH_GOAL,
      small && large ? large.peakRssMb / small.peakRssMb : null,
      ' (within 10 %)',
    ),
  ];
}
