/**
 * Gap detection for a tenant of the customers file that unsubscribed: its hours up to the unsubscription
 * are owed (gaps when not billed), the hours after it are not (no zero records are made for them, so
 * they must not show as gaps: false alarms at 3 a.m. teach operators to ignore the alert).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { findGaps } from '../../../src/reconcile/gaps.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { CustomerDirectory } from '../../../src/state/customer-directory.ts';
import { HOUR_MS, hourIso, hourStart } from '../../../src/time/hours.ts';
import { deleteKeys, stackEnv } from '../../support/harness.ts';
import { TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const ACME = TEST_CUSTOMERS.acme;

describe('reconcile gaps, a customers-file tenant that unsubscribed', () => {
  let tp: TestPipeline | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    if (tp) await deleteKeys(tp.run);
    redis.disconnect();
  });

  it('counts its hours up to the unsubscription, not after', async () => {
    const current = hourStart(Date.now());
    tp = testPipeline('gaps-file', {
      dimensions: [{ name: 'api_calls', zeroRecords: true }],
      customers: { acme: { ...ACME, subscribedAt: new Date(current - 4 * HOUR_MS).toISOString() } },
    });
    const config = tp.config(['worker']);
    const keys = new Keys(tp.run);
    const directory = new CustomerDirectory(redis, keys);
    await directory.indexFileTenants(config.customerMap, ['prod-test']);
    const event = {
      customerAwsAccountId: ACME.customerAwsAccountId,
      licenseArn: ACME.licenseArn,
      productCode: 'prod-test',
    };
    const applied = await directory.applyStatus(event, 'unsubscribed', current - 2 * HOUR_MS + 60_000);
    expect(applied.outcome).toBe('applied');

    // Past AWS's deadline of every one of those hours: each counts, closed or not.
    const { rows } = await findGaps({
      config,
      redis,
      keys,
      nowMs: current + 26 * HOUR_MS,
      fromMs: current - 6 * HOUR_MS,
      lateAfterMs: 0,
    });
    expect(rows.filter((r) => r.customer === 'acme').map((r) => r.hour)).toEqual(
      [current - 4 * HOUR_MS, current - 3 * HOUR_MS, current - 2 * HOUR_MS].map(hourIso),
    );
  });
});
