/** `meterline dlq list | inspect <id> | redrive`: the failed-records topic, for the operator. */
import { SingleBar } from 'cli-progress';
import Table from 'cli-table3';
import { type Command, InvalidArgumentError } from 'commander';
import type { Config } from '../config/config.ts';
import {
  type DlqEntry,
  FILTER_KEYS,
  matches,
  type RedriveOutcome,
  readDlq,
  redrive,
} from '../dlq/redrive.ts';
import { createKafka, idempotentProducer } from '../kafka/client.ts';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { loadConfigOrExit, roleLogger } from './lifecycle.ts';

/** Colours only for a terminal: piped output stays plain text. */
const STYLE = process.stdout.isTTY ? {} : { head: [], border: [] };

const filter = (v: string, previous: string[] = []) => {
  const [key, ...rest] = v.split('=');
  if (!key || !FILTER_KEYS.includes(key) || !rest.length) {
    throw new InvalidArgumentError(`use key=value with key one of ${FILTER_KEYS.join(', ')}`);
  }
  return [...previous, v];
};

export function registerDlqCommand(program: Command): void {
  const dlq = program.command('dlq').description('list, inspect and redrive the failed-records topic');
  dlq
    .command('list')
    .description('list failed records, newest last')
    .option('--filter <key=value>', `only entries with this ${FILTER_KEYS.join(' | ')} (repeatable)`, filter)
    .option('--json', 'one JSON envelope per line, with its id')
    .action(async (o: { filter?: string[]; json?: boolean }) => {
      await withDlq(async ({ config, entries, redriven }) => {
        const shown = entries.filter((e) => matches(e, o.filter ?? []));
        if (o.json) {
          for (const e of shown) process.stdout.write(`${JSON.stringify({ id: e.id, ...e.envelope })}\n`);
          return;
        }
        const table = new Table({
          head: ['id', 'failed at', 'stage', 'reason', 'what', 'redriven'],
          style: STYLE,
        });
        for (const e of shown) {
          table.push([
            e.id,
            e.envelope.failedAt,
            e.envelope.stage,
            e.envelope.reason,
            what(e),
            redriven(e) ? 'yes' : '',
          ]);
        }
        process.stdout.write(`${table.toString()}\n`);
        process.stdout.write(`${shown.length} of ${entries.length} entries on ${config.topics.failed}\n`);
      });
    });
  dlq
    .command('inspect <id>')
    .description('show one entry (id = partition:offset, as listed) with its original message')
    .action(async (id: string) => {
      await withDlq(async ({ entries }) => {
        const entry = entries.find((e) => e.id === id);
        if (!entry) throw new Error(`no entry ${id} on the failed-records topic`);
        const { originalBase64, ...rest } = entry.envelope;
        process.stdout.write(`${JSON.stringify({ id, ...rest }, null, 2)}\n`);
        if (originalBase64) {
          process.stdout.write(
            `original message:\n${Buffer.from(originalBase64, 'base64').toString('utf8')}\n`,
          );
        }
      });
    });
  dlq
    .command('redrive')
    .description(
      'send failed records back (ingest → usage topic, commit and submit → submission topic), once each',
    )
    .option('--filter <key=value>', `only entries with this ${FILTER_KEYS.join(' | ')} (repeatable)`, filter)
    .option('--dry-run', 'say what would be sent, send nothing')
    .action(async (o: { filter?: string[]; dryRun?: boolean }) => {
      await withDlq(async ({ config, entries, kafka, redis, keys }) => {
        const chosen = entries.filter((e) => matches(e, o.filter ?? []));
        const producer = idempotentProducer(kafka);
        await producer.connect();
        const bar = process.stderr.isTTY
          ? new SingleBar({ format: 'redrive {bar} {value}/{total} entries', stream: process.stderr })
          : undefined;
        bar?.start(chosen.length, 0);
        const results: [DlqEntry, RedriveOutcome][] = [];
        try {
          for (const entry of chosen) {
            results.push([
              entry,
              await redrive(entry, {
                kafka,
                producer,
                redis,
                keys,
                dlqTopic: config.topics.failed,
                topics: config.topics,
                api: config.worker.api,
                marginMs: 5 * 60_000,
                dryRun: Boolean(o.dryRun),
              }),
            ]);
            bar?.increment();
          }
        } finally {
          bar?.stop();
          await producer.disconnect();
        }
        process.stdout.write(`${summary(results, Boolean(o.dryRun))}\n`);
        for (const [entry, r] of results) {
          if (r.kind === 'refused')
            process.stdout.write(`refused ${entry.id} (${entry.envelope.reason}): ${r.why}\n`);
        }
      });
    });
}

/** What failed: the record's customer, dimension and hour, or where the input came from. */
function what(e: DlqEntry): string {
  const r = e.envelope.record;
  if (r) return `${r.customer} ${r.dimension} ${r.hour} (${r.quantity})`;
  const s = e.envelope.source;
  return s ? `${s.topic} ${s.partition}:${s.offset}` : '';
}

function summary(results: readonly [DlqEntry, RedriveOutcome][], dryRun: boolean): string {
  const kinds = dryRun
    ? (['would-redrive', 'refused', 'already-redriven'] as const)
    : (['redriven', 'refused', 'already-redriven'] as const);
  const rows = new Map<string, Record<string, number>>();
  for (const [entry, r] of results) {
    const row = rows.get(entry.envelope.reason) ?? {};
    row[r.kind] = (row[r.kind] ?? 0) + 1;
    rows.set(entry.envelope.reason, row);
  }
  const table = new Table({ head: ['reason', ...kinds], style: STYLE });
  for (const [reason, row] of rows) table.push([reason, ...kinds.map((k) => row[k] ?? 0)]);
  table.push(['total', ...kinds.map((k) => results.filter(([, r]) => r.kind === k).length)]);
  return table.toString();
}

async function withDlq(
  run: (ctx: {
    config: Config;
    entries: DlqEntry[];
    redriven: (e: DlqEntry) => boolean;
    kafka: ReturnType<typeof createKafka>;
    redis: ReturnType<typeof createRedis>;
    keys: Keys;
  }) => Promise<void>,
): Promise<void> {
  const config = loadConfigOrExit([]);
  const logger = roleLogger('dlq', config);
  const kafka = createKafka({ ...config.kafka, logger });
  const redis = createRedis(config.redis.url, config.redis);
  const keys = new Keys(config.redis.prefix);
  try {
    const entries = await readDlq(kafka, config.topics.failed);
    const marks = await Promise.all(
      entries.map((e) => redis.exists(keys.redriven(config.topics.failed, e.id))),
    );
    const done = new Set(entries.filter((_, i) => marks[i] === 1).map((e) => e.id));
    await run({ config, entries, redriven: (e) => done.has(e.id), kafka, redis, keys });
  } finally {
    redis.disconnect();
  }
}
