/**
 * `meterline status`: the pipeline at a glance, from Kafka and Redis. Per usage partition: lag, event
 * time, open and unemitted hours; the worker's lag; the failed records by reason; and the oldest hour
 * not yet on its way to AWS against its deadline.
 */
import type { Command } from 'commander';
import type { Kafka } from 'kafkajs';
import type { Config } from '../config/config.ts';
import { readDlq } from '../dlq/redrive.ts';
import { acceptanceDeadline } from '../metering/aws-window.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { Ledger } from '../state/ledger.ts';
import { WindowReads } from '../state/window-reads.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { type TimeoutOptions, withKafkaAndRedis, withTimeout } from './one-shot.ts';
import { type OutputOptions, printData, renderTable, withExamples, withOutput } from './output.ts';

const iso = (ms: number | undefined) => (ms === undefined ? '' : new Date(ms).toISOString());

export interface PipelineStatus {
  partitions: {
    partition: number;
    lag: string;
    eventTime: string;
    openHours: number;
    oldestOpenHour: string;
    pendingEmits: number;
    /** Customer␟dimension fields whose model holds units for the next closed hour (above AWS's limit). */
    held: number;
  }[];
  workerLag: string;
  deadLetters: Record<string, number>;
  oldestUnsubmittedHour: string | null;
  deadline: string | null;
  hoursToDeadline: number | null;
  /** The latest hour AWS accepted per customer, newest first (top-N, optionally filtered). */
  lastAccepted: { customer: string; hour: string }[];
}

export function registerStatusCommand(program: Command): void {
  const status = program
    .command('status')
    .description('lag, open hours, failed records and the oldest unsubmitted hour against its deadline')
    .option('--top <n>', 'customers to list with their last accepted hour', (v) => Number(v), 10)
    .option('--customer <text>', 'only customers whose tenant id contains this text');
  withExamples(withTimeout(withOutput(status)), [
    'meterline status',
    'meterline status -o json | jq .workerLag',
    'meterline status --customer acme --top 50',
  ]).action(async (o: OutputOptions & TimeoutOptions & { top: number; customer?: string }) => {
    const config = loadConfigOrExit([]);
    const s = await withKafkaAndRedis(config, o, 'status', (kafka, redis) =>
      readStatus(config, kafka, redis, o),
    );
    printData(o, s, () => renderStatus(config, s));
  });
}

export async function readStatus(
  config: Config,
  kafka: Kafka,
  redis: ScriptedRedis,
  o: { top: number; customer?: string },
): Promise<PipelineStatus> {
  const keys = new Keys(config.redis.prefix);
  const windows = new WindowReads(redis, keys);
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = new Set(await admin.listTopics());
    if (!topics.has(config.topics.usage)) {
      throw new Error(`topic ${config.topics.usage} does not exist: no pipeline has run against this Kafka`);
    }
    const usageEnds = await admin.fetchTopicOffsets(config.topics.usage);
    const times = await windows.partitionTimes(config.topics.usage, usageEnds.length);
    const partitions: PipelineStatus['partitions'] = [];
    let oldest: number | undefined;
    for (const t of times) {
      const p = { topic: config.topics.usage, partition: t.partition };
      const [counts, hour] = await Promise.all([
        windows.partitionCounts(p),
        windows.oldestUnsubmittedHour(p),
      ]);
      if (hour !== undefined && (oldest === undefined || hour < oldest)) oldest = hour;
      const end = BigInt(usageEnds.find((e) => e.partition === t.partition)?.high ?? '0');
      partitions.push({
        partition: t.partition,
        lag: String(end - ((t.checkpoint ?? -1n) + 1n)),
        eventTime: iso(t.maxEventTime),
        openHours: counts.openHours,
        oldestOpenHour: iso(hour),
        pendingEmits: counts.pendingEmits,
        held: counts.due,
      });
    }
    const subEnds = topics.has(config.topics.submissions)
      ? await admin.fetchTopicOffsets(config.topics.submissions)
      : [];
    const [committed] = subEnds.length
      ? await admin.fetchOffsets({ groupId: config.groups.worker, topics: [config.topics.submissions] })
      : [];
    let workerLag = 0n;
    for (const e of subEnds) {
      const c = committed?.partitions.find((x) => x.partition === e.partition)?.offset ?? '-1';
      workerLag += BigInt(e.high) - (BigInt(c) < 0n ? BigInt(e.low) : BigInt(c));
    }
    // Counted in a Map: reasons are read off the topic, whatever wrote them.
    const reasons = new Map<string, number>();
    for (const e of topics.has(config.topics.failed) ? await readDlq(kafka, config.topics.failed) : []) {
      reasons.set(e.envelope.reason, (reasons.get(e.envelope.reason) ?? 0) + 1);
    }
    const deadLetters: Record<string, number> = Object.fromEntries(reasons);
    // A filter reads every customer's entry: fine for thousands, and `status` is an operator's tool.
    const ledger = new Ledger(redis, keys);
    const lastAccepted = (await ledger.lastAccepted(o.customer ? Number.MAX_SAFE_INTEGER : o.top))
      .filter((c) => !o.customer || c.customer.includes(o.customer))
      .slice(0, o.top)
      .map((c) => ({ customer: c.customer, hour: iso(c.hourMs) }));
    const deadline = oldest === undefined ? undefined : acceptanceDeadline(config.worker.api, oldest);
    return {
      partitions,
      workerLag: String(workerLag),
      deadLetters,
      oldestUnsubmittedHour: oldest === undefined ? null : iso(oldest),
      deadline: deadline === undefined ? null : iso(deadline),
      hoursToDeadline: deadline === undefined ? null : Math.round((deadline - Date.now()) / 360_000) / 10,
      lastAccepted,
    };
  } finally {
    await admin.disconnect();
  }
}

function renderStatus(config: Config, status: PipelineStatus): string {
  const table = renderTable(
    ['partition', 'lag', 'event time', 'open hours', 'oldest unsubmitted hour', 'unemitted', 'held'],
    status.partitions.map((p) => [
      p.partition,
      p.lag,
      p.eventTime,
      p.openHours,
      p.oldestOpenHour,
      p.pendingEmits,
      p.held,
    ]),
  );
  const failed =
    Object.entries(status.deadLetters)
      .map(([r, n]) => `${r} ${n}`)
      .join(', ') || 'none';
  const lines = [
    config.topics.usage,
    table,
    `worker lag on ${config.topics.submissions}: ${status.workerLag}`,
    `failed records: ${failed}`,
    status.oldestUnsubmittedHour
      ? `oldest unsubmitted hour: ${status.oldestUnsubmittedHour}, deadline ${status.deadline} (${status.hoursToDeadline} h left)`
      : 'no hour waiting in the processor',
    status.lastAccepted.length
      ? renderTable(
          ['customer', 'last hour accepted by AWS'],
          status.lastAccepted.map((c) => [c.customer, c.hour]),
        )
      : 'no hour accepted by AWS yet',
  ];
  return `${lines.join('\n')}\n`;
}
