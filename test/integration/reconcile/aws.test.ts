/**
 * `reconcile aws` with fixture files in AWS's documented formats (test/fixtures/aws/README.md): a
 * CloudTrail export holding one record we sent that AWS never saw, one AWS took with another quantity and
 * one we never sent is found, each; a Daily Usage data feed whose day total differs is found. The ledger
 * is seeded in Redis under the test's own prefix and read by the real CLI.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { recordId } from '../../../src/metering/submission-record.ts';
import {
  type AcceptedRecord,
  listTrailFiles,
  matchCloudTrail,
  matchUsageFeed,
  readAccountMap,
  readCloudTrail,
  readUsageFeed,
} from '../../../src/reconcile/aws.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { CustomerDirectory } from '../../../src/state/customer-directory.ts';
import { Ledger } from '../../../src/state/ledger.ts';
import { cli } from '../../support/cli.ts';
import { deleteKeys, stackEnv } from '../../support/harness.ts';
import { testPipeline } from '../../support/pipeline-env.ts';

const fixtures = fileURLToPath(new URL('../../fixtures/aws/', import.meta.url));
const h = (hour: number) => Date.UTC(2026, 11, 1, hour);
const mapping: Record<string, string> = {
  acme: '111111111111',
  globex: '222222222222',
  initech: '333333333333',
  umbrella: 'cust-umbrella',
};
/** What our ledger holds (README's table). */
const ledger: [tenant: string, dimension: string, hour: number, quantity: number, mrid: string][] = [
  ['acme', 'api_calls', 10, 5, 'mr-acme-api-10'],
  ['acme', 'jobs', 10, 3, 'mr-acme-jobs-10'],
  ['globex', 'api_calls', 10, 8, 'mr-globex-api-10'],
  ['umbrella', 'api_calls', 11, 2, 'mr-umbrella-api-11'],
];
const ours: AcceptedRecord[] = ledger.map(([tenant, dimension, hour, quantity, mrid]) => ({
  recordId: recordId('prod-test', tenant, dimension, h(hour)),
  tenant,
  customer: mapping[tenant],
  dimension,
  hourMs: h(hour),
  quantity,
  meteringRecordId: mrid,
}));
const whole = { fromMs: h(0), toMs: h(24) };

describe('reconcile aws', () => {
  const tp = testPipeline('reconcile-aws');
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await deleteKeys(tp.run);
    redis.disconnect();
  });

  it('reads CloudTrail files gzipped or not, only the Metering Service’s answered records', () => {
    const files = listTrailFiles([`${fixtures}cloudtrail`]);
    expect(files).toHaveLength(2);
    const { records, skipped } = readCloudTrail(files);
    expect(skipped).toBe(1);
    expect(
      records.map((r) => [r.customer, r.dimension, new Date(r.hourMs).toISOString(), r.quantity, r.status]),
    ).toEqual([
      ['111111111111', 'api_calls', '2026-12-01T10:00:00.000Z', 5, 'Success'],
      ['222222222222', 'api_calls', '2026-12-01T10:00:00.000Z', 9, 'Success'],
      ['111111111111', 'api_calls', '2026-12-01T10:00:00.000Z', 6, 'DuplicateRecord'],
      ['333333333333', 'jobs', '2026-12-01T11:00:00.000Z', 4, 'Success'],
      ['cust-umbrella', 'api_calls', '2026-12-01T11:00:00.000Z', 2, 'Success'],
    ]);
  });

  it('finds the record AWS never saw, the one it took with another quantity, and the one we never sent', () => {
    const { records } = readCloudTrail(listTrailFiles([`${fixtures}cloudtrail`]));
    const rows = matchCloudTrail(records, ours, whole);
    expect(rows.map((r) => [r.finding, r.customer, r.dimension, r.period, r.ours, r.aws])).toEqual([
      ['missing_at_aws', '111111111111', 'jobs', '2026-12-01T10:00:00Z', 3, undefined],
      ['quantity_differs', '222222222222', 'api_calls', '2026-12-01T10:00:00Z', 8, 9],
      ['not_sent_by_us', '333333333333', 'jobs', '2026-12-01T11:00:00Z', undefined, 4],
    ]);
    // Outside the range asked for, nothing is compared.
    expect(matchCloudTrail(records, ours, { fromMs: h(12), toMs: h(24) })).toEqual([]);
  });

  it('finds a day whose usage-feed total differs from the ledger’s, per dimension and per customer', () => {
    const feed = readUsageFeed(`${fixtures}daily-usage-feed.csv`);
    expect(feed).toHaveLength(5);
    const rows = matchUsageFeed(feed, ours, 'daily-usage-feed.csv');
    expect(rows.map((r) => [r.finding, r.customer, r.dimension, r.period, r.ours, r.aws])).toEqual([
      ['day_total_differs', '*', 'jobs', '2026-12-01', 3, 7],
    ]);
    const perCustomer = matchUsageFeed(feed, ours, 'feed', readAccountMap(`${fixtures}account-map.csv`));
    expect(perCustomer.map((r) => [r.customer, r.dimension, r.ours, r.aws])).toEqual([
      ['*', 'jobs', 3, 7],
      ['333333333333', 'jobs', 0, 4],
    ]);
  });

  it('the CLI reads the ledger, reports every finding as a table, JSON or CSV, and exits 1', async () => {
    const keys = new Keys(tp.run);
    await new Ledger(redis, keys).record(
      ours.map((r) => ({
        recordId: r.recordId,
        entry: {
          meteringRecordId: r.meteringRecordId,
          quantity: r.quantity,
          acceptedAt: '2026-12-01T12:00:00Z',
        },
      })),
    );
    const args = [
      'reconcile',
      'aws',
      '--cloudtrail',
      `${fixtures}cloudtrail`,
      '--usage-feed',
      `${fixtures}daily-usage-feed.csv`,
    ];
    const json = await cli([...args, '-o', 'json'], tp.env);
    expect(json.code, json.stderr).toBe(1);
    const report = JSON.parse(json.stdout) as {
      rows: { finding: string; customer: string; tenant?: string }[];
    };
    expect(report.rows.map((r) => [r.finding, r.customer, r.tenant])).toEqual([
      ['missing_at_aws', '111111111111', 'acme'],
      ['quantity_differs', '222222222222', 'globex'],
      ['not_sent_by_us', '333333333333', undefined],
      ['day_total_differs', '*', undefined],
    ]);
    const table = await cli([...args, '-o', 'table'], tp.env);
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/^finding\s+period\s+customer/);
    expect(table.stdout).toContain('4 findings');
    const csv = await cli([...args, '-o', 'csv'], tp.env);
    expect(csv.stdout.split('\r\n')).toHaveLength(6);
    // Piped without -o, a report is CSV (for cron and spreadsheets).
    expect((await cli(args, tp.env)).stdout).toBe(csv.stdout);
    // A tenant registered through the registration URL (not in the customers file) is matched by the AWS
    // account the directory holds for it.
    await new CustomerDirectory(redis, keys).register(
      'hooli',
      {
        productCode: 'prod-test',
        customerAwsAccountId: '444444444444',
        licenseArn: 'arn:aws:license-manager::444444444444:license:l-d4',
      },
      h(9),
    );
    const hooli = recordId('prod-test', 'hooli', 'api_calls', h(11));
    await new Ledger(redis, keys).record([
      {
        recordId: hooli,
        entry: { meteringRecordId: 'mr-hooli', quantity: 1, acceptedAt: '2026-12-01T12:00:00Z' },
      },
    ]);
    const registered = await cli(
      [
        'reconcile',
        'aws',
        '--cloudtrail',
        `${fixtures}cloudtrail`,
        '--from',
        '2026-12-01T11:00Z',
        '--to',
        '2026-12-01T12:00Z',
        '-o',
        'json',
      ],
      tp.env,
    );
    expect(
      JSON.parse(registered.stdout).rows.map((r: { finding: string; customer: string }) => [
        r.finding,
        r.customer,
      ]),
    ).toEqual([
      ['not_sent_by_us', '333333333333'],
      ['missing_at_aws', '444444444444'],
    ]);

    // Hours where AWS's evidence and the ledger agree: nothing found, exit 0.
    const agreeing = await cli(
      [
        'reconcile',
        'aws',
        '--cloudtrail',
        `${fixtures}cloudtrail`,
        '--from',
        '2026-12-01T12:00Z',
        '--to',
        '2026-12-01T13:00Z',
        '-o',
        'json',
      ],
      tp.env,
    );
    expect(agreeing.code, agreeing.stderr).toBe(0);
    expect(JSON.parse(agreeing.stdout).rows).toEqual([]);
  });
});
