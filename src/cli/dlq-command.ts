/** `meterline dlq list | inspect <id> | redrive`: the failed-records topic, for the operator. */
import { SingleBar } from 'cli-progress';
import { type Command, InvalidArgumentError } from 'commander';
import type { Kafka } from 'kafkajs';
import type { Config } from '../config/config.ts';
import {
  type DlqEntry,
  FILTER_KEYS,
  matches,
  REDRIVE_MARGIN_MS,
  type RedriveOutcome,
  readDlqWithMarks,
  redriveMany,
} from '../dlq/redrive.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { type TimeoutOptions, withKafkaAndRedis, withTimeout } from './one-shot.ts';
import { type OutputOptions, printData, renderTable, withExamples, withOutput } from './output.ts';

const filter = (v: string, previous: string[] = []) => {
  const [key, ...rest] = v.split('=');
  if (!key || !FILTER_KEYS.includes(key) || !rest.length) {
    throw new InvalidArgumentError(`use key=value with key one of ${FILTER_KEYS.join(', ')}`);
  }
  return [...previous, v];
};

/** An entry id as `dlq list` shows it, partition:offset; checked before anything is contacted. */
const entryId = (v: string) => {
  if (!/^\d{1,9}:\d{1,19}$/.test(v)) {
    throw new InvalidArgumentError(
      'an entry id is partition:offset, such as 0:42, as `meterline dlq list` shows it',
    );
  }
  return v;
};

type ListOptions = OutputOptions & TimeoutOptions & { filter?: string[] };

export function registerDlqCommand(program: Command): void {
  const dlq = program.command('dlq').description('list, inspect and redrive the failed-records topic');
  withExamples(dlq, ['meterline dlq list', 'meterline dlq inspect 0:42', 'meterline dlq redrive --dry-run']);
  const list = dlq
    .command('list')
    .description('list failed records, newest last')
    .option('--filter <key=value>', `only entries with this ${FILTER_KEYS.join(' | ')} (repeatable)`, filter);
  withExamples(withTimeout(withOutput(list)), [
    'meterline dlq list',
    'meterline dlq list --filter reason=customer_not_subscribed',
    'meterline dlq list --filter stage=submit -o json',
  ]).action(async (o: ListOptions) => {
    await withDlq(o, async ({ config, entries, redriven }) => {
      const shown = entries.filter((e) => matches(e, o.filter ?? []));
      printData(
        o,
        shown.map((e) => ({ id: e.id, ...e.envelope, redriven: redriven(e) })),
        () =>
          `${renderTable(
            ['id', 'failed at', 'stage', 'reason', 'what', 'redriven'],
            shown.map((e) => [
              e.id,
              e.envelope.failedAt,
              e.envelope.stage,
              e.envelope.reason,
              what(e),
              redriven(e) ? 'yes' : '',
            ]),
          )}\n${shown.length} of ${entries.length} entries on ${config.topics.failed}\n`,
      );
    });
  });
  const inspect = dlq
    .command('inspect')
    .description('show one entry (id = partition:offset, as listed) with its original message')
    .argument('<id>', 'partition:offset, as `meterline dlq list` shows it', entryId);
  withExamples(withTimeout(withOutput(inspect)), [
    'meterline dlq inspect 0:42',
    'meterline dlq inspect 0:42 -o yaml',
  ]).action(async (id: string, o: OutputOptions & TimeoutOptions) => {
    await withDlq(o, async ({ entries, redriven }) => {
      const entry = entries.find((e) => e.id === id);
      if (!entry) throw new Error(`no entry ${id} on the failed-records topic`);
      const { originalBase64, ...rest } = entry.envelope;
      const original = originalBase64 ? Buffer.from(originalBase64, 'base64').toString('utf8') : null;
      printData(
        o,
        { id, ...rest, redriven: redriven(entry), original },
        () =>
          `${JSON.stringify({ id, ...rest }, null, 2)}\n${original === null ? '' : `original message:\n${original}\n`}`,
      );
    });
  });
  const redriveCommand = dlq
    .command('redrive')
    .description(
      'send failed records back (ingest → usage topic, commit and submit → submission topic), once each',
    )
    .option('--filter <key=value>', `only entries with this ${FILTER_KEYS.join(' | ')} (repeatable)`, filter)
    .option('--dry-run', 'say what would be sent, send nothing');
  withExamples(withTimeout(withOutput(redriveCommand)), [
    'meterline dlq redrive --dry-run',
    'meterline dlq redrive --filter reason=customer_not_subscribed',
    'meterline dlq redrive --filter stage=submit --filter customer=acme -o json',
  ]).action(async (o: ListOptions & { dryRun?: boolean }) => {
    await withDlq(o, async ({ config, entries, kafka, redis, keys }) => {
      const chosen = entries.filter((e) => matches(e, o.filter ?? []));
      const bar = process.stderr.isTTY
        ? new SingleBar({ format: 'redrive {bar} {value}/{total} entries', stream: process.stderr })
        : undefined;
      bar?.start(chosen.length, 0);
      const results = await redriveMany(
        chosen,
        {
          kafka,
          redis,
          keys,
          dlqTopic: config.topics.failed,
          topics: config.topics,
          api: config.worker.api,
          marginMs: REDRIVE_MARGIN_MS,
          dryRun: Boolean(o.dryRun),
        },
        () => bar?.increment(),
      ).finally(() => bar?.stop());
      const dryRun = Boolean(o.dryRun);
      const refused = results.flatMap(([entry, r]) =>
        r.kind === 'refused' ? [{ id: entry.id, reason: entry.envelope.reason, why: r.why }] : [],
      );
      printData(
        o,
        { dryRun, byReason: summary(results, dryRun), refused },
        () =>
          `${summaryTable(results, dryRun)}\n${refused.map((r) => `refused ${r.id} (${r.reason}): ${r.why}\n`).join('')}`,
      );
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

function kindsOf(dryRun: boolean) {
  return dryRun
    ? (['would-redrive', 'refused', 'already-redriven'] as const)
    : (['redriven', 'refused', 'already-redriven'] as const);
}

/** Per reason, how many entries had each outcome; the last row is the total. */
function summary(
  results: readonly [DlqEntry, RedriveOutcome][],
  dryRun: boolean,
): ({ reason: string } & Record<string, number | string>)[] {
  const kinds = kindsOf(dryRun);
  const rows = new Map<string, Record<string, number>>();
  for (const [entry, r] of results) {
    const row = rows.get(entry.envelope.reason) ?? Object.fromEntries(kinds.map((k) => [k, 0]));
    row[r.kind] = (row[r.kind] ?? 0) + 1;
    rows.set(entry.envelope.reason, row);
  }
  return [
    ...[...rows].map(([reason, row]) => ({ reason, ...row })),
    {
      reason: 'total',
      ...Object.fromEntries(kinds.map((k) => [k, results.filter(([, r]) => r.kind === k).length])),
    },
  ];
}

function summaryTable(results: readonly [DlqEntry, RedriveOutcome][], dryRun: boolean): string {
  const kinds = kindsOf(dryRun);
  return renderTable(
    ['reason', ...kinds],
    summary(results, dryRun).map((row) => [row.reason, ...kinds.map((k) => row[k] ?? 0)]),
  );
}

/**
 * Reaches Kafka and Redis within the --timeout, then reads the failed-records topic (none yet: no
 * entries) and which entries were redriven.
 */
async function withDlq(
  o: TimeoutOptions,
  run: (ctx: {
    config: Config;
    entries: DlqEntry[];
    redriven: (e: DlqEntry) => boolean;
    kafka: Kafka;
    redis: ScriptedRedis;
    keys: Keys;
  }) => Promise<void>,
): Promise<void> {
  const config = loadConfigOrExit([]);
  const keys = new Keys(config.redis.prefix);
  await withKafkaAndRedis(config, o, 'dlq', async (kafka, redis) => {
    const { entries, redriven } = await readDlqWithMarks(kafka, redis, keys, config.topics.failed);
    await run({ config, entries, redriven, kafka, redis, keys });
  });
}
