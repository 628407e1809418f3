/**
 * `meterline status`: the pipeline at a glance, from Kafka and Redis. Per usage partition: lag, event
 * time, open and unemitted hours; the worker's lag; the failed records by reason; and the oldest hour
 * not yet on its way to AWS against its deadline.
 */
import Table from 'cli-table3';
import type { Command } from 'commander';
import { readDlq } from '../dlq/redrive.ts';
import { createKafka } from '../kafka/client.ts';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { acceptanceDeadline } from '../submit/aws-window.ts';
import { WindowStore } from '../window/window-store.ts';
import { loadConfigOrExit, roleLogger } from './lifecycle.ts';

const STYLE = process.stdout.isTTY ? {} : { head: [], border: [] };
const iso = (ms: number | undefined) => (ms === undefined ? '' : new Date(ms).toISOString());

export interface PipelineStatus {
  partitions: {
    partition: number;
    lag: string;
    eventTime: string;
    openHours: number;
    oldestOpenHour: string;
    pendingEmits: number;
  }[];
  workerLag: string;
  deadLetters: Record<string, number>;
  oldestUnsubmittedHour: string | null;
  deadline: string | null;
  hoursToDeadline: number | null;
}

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('lag, open hours, failed records and the oldest unsubmitted hour against its deadline')
    .option('--json', 'print the status as JSON')
    .action(async (o: { json?: boolean }) => {
      const config = loadConfigOrExit([]);
      const logger = roleLogger('status', config);
      const kafka = createKafka({ brokers: config.kafka.brokers, clientId: config.kafka.clientId, logger });
      const redis = createRedis(config.redis.url, { cluster: config.redis.cluster });
      const keys = new Keys(config.redis.prefix);
      const windows = new WindowStore(redis, keys, { dedupeTtlMs: 1, finalizedTtlMs: 1 });
      const admin = kafka.admin();
      await admin.connect();
      try {
        const topics = new Set(await admin.listTopics());
        if (!topics.has(config.topics.usage)) {
          throw new Error(
            `topic ${config.topics.usage} does not exist: no pipeline has run against this Kafka`,
          );
        }
        const usageEnds = await admin.fetchTopicOffsets(config.topics.usage);
        const times = await windows.partitionTimes(config.topics.usage, usageEnds.length);
        const partitions: PipelineStatus['partitions'] = [];
        let oldest: number | undefined;
        for (const t of times) {
          const p = { topic: config.topics.usage, partition: t.partition };
          const k = keys.partition(p);
          const [open, pending, hour] = await Promise.all([
            redis.zcard(k.openHours()),
            redis.zcard(k.pendingEmit()),
            windows.oldestUnsubmittedHour(p),
          ]);
          if (hour !== undefined && (oldest === undefined || hour < oldest)) oldest = hour;
          const end = BigInt(usageEnds.find((e) => e.partition === t.partition)?.high ?? '0');
          partitions.push({
            partition: t.partition,
            lag: String(end - ((t.checkpoint ?? -1n) + 1n)),
            eventTime: iso(t.maxEventTime),
            openHours: open,
            oldestOpenHour: iso(hour),
            pendingEmits: pending,
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
        const deadLetters: Record<string, number> = {};
        for (const e of topics.has(config.topics.failed) ? await readDlq(kafka, config.topics.failed) : []) {
          deadLetters[e.envelope.reason] = (deadLetters[e.envelope.reason] ?? 0) + 1;
        }
        const deadline = oldest === undefined ? undefined : acceptanceDeadline(config.worker.api, oldest);
        const status: PipelineStatus = {
          partitions,
          workerLag: String(workerLag),
          deadLetters,
          oldestUnsubmittedHour: oldest === undefined ? null : iso(oldest),
          deadline: deadline === undefined ? null : iso(deadline),
          hoursToDeadline: deadline === undefined ? null : Math.round((deadline - Date.now()) / 360_000) / 10,
        };
        if (o.json) {
          process.stdout.write(`${JSON.stringify(status)}\n`);
          return;
        }
        const table = new Table({
          head: ['partition', 'lag', 'event time', 'open hours', 'oldest unsubmitted hour', 'unemitted'],
          style: STYLE,
        });
        for (const p of partitions) {
          table.push([p.partition, p.lag, p.eventTime, p.openHours, p.oldestOpenHour, p.pendingEmits]);
        }
        process.stdout.write(`${config.topics.usage}\n${table.toString()}\n`);
        process.stdout.write(`worker lag on ${config.topics.submissions}: ${status.workerLag}\n`);
        process.stdout.write(
          `failed records: ${
            Object.entries(deadLetters)
              .map(([r, n]) => `${r} ${n}`)
              .join(', ') || 'none'
          }\n`,
        );
        process.stdout.write(
          status.oldestUnsubmittedHour
            ? `oldest unsubmitted hour: ${status.oldestUnsubmittedHour}, deadline ${status.deadline} (${status.hoursToDeadline} h left)\n`
            : 'no hour waiting in the processor\n',
        );
      } finally {
        await admin.disconnect();
        redis.disconnect();
      }
    });
}
