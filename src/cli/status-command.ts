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
import { Ledger } from '../submit/ledger.ts';
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
  program
    .command('status')
    .description('lag, open hours, failed records and the oldest unsubmitted hour against its deadline')
    .option('--json', 'print the status as JSON')
    .option('--top <n>', 'customers to list with their last accepted hour', (v) => Number(v), 10)
    .option('--customer <text>', 'only customers whose tenant id contains this text')
    .action(async (o: { json?: boolean; top: number; customer?: string }) => {
      const config = loadConfigOrExit([]);
      const logger = roleLogger('status', config);
      const kafka = createKafka({ ...config.kafka, logger });
      const redis = createRedis(config.redis.url, config.redis);
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
          const [open, pending, hour, held] = await Promise.all([
            redis.zcard(k.openHours()),
            redis.zcard(k.pendingEmit()),
            windows.oldestUnsubmittedHour(p),
            redis.scard(k.due()),
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
            held,
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
        const status: PipelineStatus = {
          partitions,
          workerLag: String(workerLag),
          deadLetters,
          oldestUnsubmittedHour: oldest === undefined ? null : iso(oldest),
          deadline: deadline === undefined ? null : iso(deadline),
          hoursToDeadline: deadline === undefined ? null : Math.round((deadline - Date.now()) / 360_000) / 10,
          lastAccepted,
        };
        if (o.json) {
          process.stdout.write(`${JSON.stringify(status)}\n`);
          return;
        }
        const table = new Table({
          head: [
            'partition',
            'lag',
            'event time',
            'open hours',
            'oldest unsubmitted hour',
            'unemitted',
            'held',
          ],
          style: STYLE,
        });
        for (const p of partitions) {
          table.push([
            p.partition,
            p.lag,
            p.eventTime,
            p.openHours,
            p.oldestOpenHour,
            p.pendingEmits,
            p.held,
          ]);
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
        if (lastAccepted.length) {
          const last = new Table({ head: ['customer', 'last hour accepted by AWS'], style: STYLE });
          for (const c of lastAccepted) last.push([c.customer, c.hour]);
          process.stdout.write(`${last.toString()}\n`);
        } else {
          process.stdout.write('no hour accepted by AWS yet\n');
        }
      } finally {
        await admin.disconnect();
        redis.disconnect();
      }
    });
}
