/**
 * `meterline reconcile internal | aws | gaps`: where every unit went. Each prints a report (a table on a
 * terminal, plain columns piped, or -o json|yaml|csv) and exits 1 when it finds an imbalance, so cron
 * and CI can run it.
 */
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { awsCustomerId } from '../config/customers.ts';
import { parseDuration } from '../config/duration.ts';
import {
  type AcceptedRecord,
  type AwsRow,
  listTrailFiles,
  matchCloudTrail,
  matchUsageFeed,
  readAccountMap,
  readCloudTrail,
  readUsageFeed,
} from '../reconcile/aws.ts';
import { collectInternal, type Progress } from '../reconcile/collect.ts';
import { findGaps, type GapRow } from '../reconcile/gaps.ts';
import { parseRecordId, reconcileInternal, summarize } from '../reconcile/internal.ts';
import type { ReconcileRow } from '../reconcile/reconcile-rows.ts';
import {
  type Column,
  num,
  printReport,
  type ReportFormat,
  reportFormat,
  withReportOutput,
} from '../reconcile/report.ts';
import { instantArg, parseInstant } from '../reconcile/time-range.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory } from '../state/customer-directory.ts';
import { Ledger } from '../state/ledger.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { EXIT, type TimeoutOptions, withKafkaAndRedis, withRedis, withTimeout } from './one-shot.ts';
import { withExamples } from './output.ts';

type ReportOptions = TimeoutOptions & { output: ReportFormat; json?: boolean };

const INTERNAL_COLUMNS: Column<ReconcileRow>[] = [
  { head: 'hour', value: (r) => r.hour },
  { head: 'customer', value: (r) => r.customer },
  { head: 'dimension', value: (r) => r.dimension },
  { head: 'measured', value: (r) => num(r.measured) },
  { head: 'carried out', value: (r) => num(r.carriedOut ?? (r.lateEventsOut || undefined)) },
  { head: 'carried in', value: (r) => num(r.carriedIn ?? (r.lateEventsIn || undefined)) },
  { head: 'remainder', value: (r) => num(r.remainderOut) },
  { head: 'held', value: (r) => num(r.held) },
  { head: 'frozen', value: (r) => num(r.frozen) },
  { head: 'emitted', value: (r) => num(r.emitted) },
  { head: 'accepted', value: (r) => num(r.accepted) },
  { head: 'dead-lettered', value: (r) => num(r.deadLettered) },
  { head: 'redriven', value: (r) => num(r.redriven) },
  { head: 'status', value: (r) => r.status },
  { head: 'reasons', value: (r) => r.reasons.join(' ') },
  { head: 'notes', value: (r) => r.notes?.join(' ') },
];

/** A bar with counts and an ETA on stderr when it is a terminal; nothing otherwise. */
export function progressBar(): { progress: Progress | undefined; stop: () => void } {
  if (!process.stderr.isTTY) return { progress: undefined, stop: () => {} };
  let bar: SingleBar | undefined;
  let current = '';
  return {
    progress: (stage, done, total) => {
      if (stage !== current) {
        bar?.stop();
        current = stage;
        bar = new SingleBar({
          format: `reading ${stage} {bar} {value}/{total} messages, ETA {eta_formatted}`,
          stream: process.stderr,
          etaBuffer: 50,
        });
        bar.start(total, done);
      } else bar?.update(done);
    },
    stop: () => bar?.stop(),
  };
}

export function registerReconcileCommand(program: Command): void {
  const reconcile = program
    .command('reconcile')
    .description('account for every unit: internally, against AWS evidence, and for missing hours');
  withExamples(reconcile, [
    'meterline reconcile internal --from 48h',
    'meterline reconcile aws --cloudtrail ./trail/ --report usage.csv',
    'meterline reconcile gaps --from 7d -o json',
  ]);

  const internal = reconcile
    .command('internal')
    .description(
      'for each customer, dimension and hour: measured, carried, frozen, emitted, accepted, dead-lettered and redriven units; exit 1 on any imbalance',
    )
    .option('--from <time>', 'first hour: an ISO time with a zone or a duration ago', instantArg, '48h')
    .option('--to <time>', 'end (exclusive): an ISO time with a zone or a duration ago', instantArg)
    .option('--measure', 're-read the usage topic and measure every hour from its events')
    .option('--carried-ok', 'late units carried to a later hour count as balanced')
    .option('--all', 'list balanced rows too (by default only pending and unbalanced ones)');
  withExamples(withTimeout(withReportOutput(internal)), [
    'meterline reconcile internal --from 48h',
    'meterline reconcile internal --from 2026-12-01T00:00Z --to 2026-12-02T00:00Z --measure -o csv',
    'meterline reconcile internal --from 24h --all -o json',
  ]).action(
    async (
      o: ReportOptions & { from: string; to?: string; measure?: boolean; carriedOk?: boolean; all?: boolean },
    ) => {
      const config = loadConfigOrExit([]);
      const nowMs = Date.now();
      const fromMs = hourStart(parseInstant(o.from, nowMs));
      const toMs =
        o.to === undefined ? hourStart(nowMs) + HOUR_MS : hourStart(parseInstant(o.to, nowMs) - 1) + HOUR_MS;
      const bar = progressBar();
      const inputs = await withKafkaAndRedis(config, o, 'reconcile', (kafka, redis) =>
        collectInternal({
          config,
          kafka,
          redis,
          keys: new Keys(config.redis.prefix),
          fromMs,
          toMs,
          nowMs,
          measure: Boolean(o.measure),
          ...(bar.progress ? { progress: bar.progress } : {}),
        }),
      ).finally(() => bar.stop());
      const rows = reconcileInternal(inputs, { carriedOk: Boolean(o.carriedOk) });
      const counts = summarize(rows);
      const shown = o.all ? rows : rows.filter((r) => r.status !== 'balanced');
      printReport(
        reportFormat(o),
        {
          from: hourIso(fromMs),
          to: hourIso(toMs),
          measured: Boolean(o.measure),
          summary: counts,
          rows: shown,
        },
        shown,
        INTERNAL_COLUMNS,
        `${rows.length} rows from ${hourIso(fromMs)} to ${hourIso(toMs)}: ${counts.balanced} balanced, ${counts.pending} pending, ${counts.unbalanced} unbalanced${
          Object.keys(counts.reasons).length
            ? ` (${Object.entries(counts.reasons)
                .map(([r, n]) => `${r} ${n}`)
                .join(', ')})`
            : ''
        }\n`,
      );
      if (counts.unbalanced) process.exitCode = EXIT.failed;
    },
  );

  const aws = reconcile
    .command('aws')
    .description(
      "the ledger against AWS's evidence: CloudTrail log files (gzipped or not) and the Daily Usage data feed; exit 1 on any finding",
    )
    .option('--cloudtrail <paths...>', 'CloudTrail log files or folders of them (*.json, *.json.gz)')
    .option('--usage-feed <file>', 'the Daily Usage data feed (CSV) of the Seller Delivery Data Feeds')
    .option(
      '--account-map <file>',
      "CSV of the feed's end_user_account_id and the AWS account id, for per-customer totals",
    )
    .option(
      '--from <time>',
      'first hour compared (default: the earliest hour in the CloudTrail files)',
      instantArg,
    )
    .option(
      '--to <time>',
      'end, exclusive (default: after the latest hour in the CloudTrail files)',
      instantArg,
    );
  withExamples(withTimeout(withReportOutput(aws)), [
    'meterline reconcile aws --cloudtrail ./AWSLogs/123456789012/CloudTrail/us-east-1/2026/12/01/',
    'meterline reconcile aws --usage-feed daily_usage.csv --account-map accounts.csv -o csv',
  ]).action(
    async (
      o: ReportOptions & {
        cloudtrail?: string[];
        usageFeed?: string;
        accountMap?: string;
        from?: string;
        to?: string;
      },
    ) => {
      if (!o.cloudtrail && !o.usageFeed)
        aws.error('give --cloudtrail, --usage-feed or both', { exitCode: EXIT.usage });
      const config = loadConfigOrExit([]);
      // Files first: a file that cannot be read fails before anything is contacted.
      const trail = o.cloudtrail ? readCloudTrail(listTrailFiles(o.cloudtrail)) : undefined;
      const feed = o.usageFeed ? readUsageFeed(o.usageFeed) : undefined;
      const accountOf = o.accountMap ? readAccountMap(o.accountMap) : undefined;
      const keys = new Keys(config.redis.prefix);
      await withRedis(config, o, async (redis) => {
        // Tenants of the customers file, then those registered through the registration URL.
        const awsIdOf = new Map([...config.customerMap].map(([tenant, m]) => [tenant, awsCustomerId(m)]));
        for (const entry of await new CustomerDirectory(redis, keys).all()) {
          const id = entry.customerAwsAccountId ?? entry.customerIdentifier;
          if (id && !awsIdOf.has(entry.tenant)) awsIdOf.set(entry.tenant, id);
        }
        const ours: AcceptedRecord[] = [];
        for (const [id, entry] of await new Ledger(redis, keys).all()) {
          const r = parseRecordId(id);
          if (!r) continue;
          ours.push({
            recordId: id,
            tenant: r.customer,
            customer: awsIdOf.get(r.customer),
            dimension: r.dimension,
            hourMs: r.hourMs,
            quantity: entry.quantity,
            meteringRecordId: entry.meteringRecordId,
          });
        }
        const hours = trail?.records.map((t) => t.hourMs) ?? [];
        const nowMs = Date.now();
        const fromMs = o.from
          ? hourStart(parseInstant(o.from, nowMs))
          : hours.length
            ? Math.min(...hours)
            : 0;
        const toMs = o.to
          ? hourStart(parseInstant(o.to, nowMs) - 1) + HOUR_MS
          : hours.length
            ? Math.max(...hours) + HOUR_MS
            : 0;
        const rows: AwsRow[] = [
          ...(trail ? matchCloudTrail(trail.records, ours, { fromMs, toMs }) : []),
          ...(feed ? matchUsageFeed(feed, ours, o.usageFeed as string, accountOf) : []),
        ];
        printReport(
          reportFormat(o),
          {
            cloudtrail: trail
              ? {
                  records: trail.records.length,
                  skipped: trail.skipped,
                  from: hourIso(fromMs),
                  to: hourIso(toMs),
                }
              : null,
            usageFeed: feed ? { rows: feed.length } : null,
            rows,
          },
          rows,
          AWS_COLUMNS,
          `${rows.length} findings${trail ? `; ${trail.records.length} CloudTrail records from ${hourIso(fromMs)} to ${hourIso(toMs)}` : ''}${feed ? `; ${feed.length} usage feed rows` : ''}\n`,
        );
        if (rows.length) process.exitCode = EXIT.failed;
      });
    },
  );

  const gaps = reconcile
    .command('gaps')
    .description(
      'hours of subscribed customers (zero-record dimensions) with no record accepted by AWS: missed (past the deadline) or late; exit 1 on any',
    )
    .option('--from <time>', 'first hour looked at (the subscription start when later)', instantArg, '48h')
    .option('--late-after <duration>', 'a closed hour not accepted this long after its end is late', '1h');
  withExamples(withTimeout(withReportOutput(gaps)), [
    'meterline reconcile gaps',
    'meterline reconcile gaps --from 7d -o csv',
  ]).action(async (o: ReportOptions & { from: string; lateAfter: string }) => {
    const lateAfterMs = parseDuration(o.lateAfter);
    if (lateAfterMs === undefined)
      gaps.error('--late-after must be a duration like 30m or 1h', { exitCode: EXIT.usage });
    const config = loadConfigOrExit([]);
    await withRedis(config, o, async (redis) => {
      const nowMs = Date.now();
      const { rows, checked } = await findGaps({
        config,
        redis,
        keys: new Keys(config.redis.prefix),
        nowMs,
        fromMs: parseInstant(o.from, nowMs),
        lateAfterMs: lateAfterMs as number,
      });
      printReport(
        reportFormat(o),
        { checked, gaps: rows.length, rows },
        rows,
        GAP_COLUMNS,
        `${rows.length} gaps (${rows.filter((r) => r.state === 'missed').length} missed) in ${checked} hours due\n`,
      );
      if (rows.length) process.exitCode = EXIT.failed;
    });
  });
}

const GAP_COLUMNS: Column<GapRow>[] = [
  { head: 'hour', value: (r) => r.hour },
  { head: 'customer', value: (r) => r.customer },
  { head: 'dimension', value: (r) => r.dimension },
  { head: 'state', value: (r) => r.state },
  { head: 'deadline', value: (r) => r.deadline },
  { head: 'record id', value: (r) => r.recordId },
];

const AWS_COLUMNS: Column<AwsRow>[] = [
  { head: 'finding', value: (r) => r.finding },
  { head: 'period', value: (r) => r.period },
  { head: 'customer', value: (r) => r.customer },
  { head: 'tenant', value: (r) => r.tenant },
  { head: 'dimension', value: (r) => r.dimension },
  { head: 'ours', value: (r) => num(r.ours) },
  { head: 'aws', value: (r) => num(r.aws) },
  { head: 'aws status', value: (r) => r.status },
  { head: 'metering record id', value: (r) => r.meteringRecordId },
  { head: 'source', value: (r) => r.source },
];
