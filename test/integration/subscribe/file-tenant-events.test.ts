/**
 * Lifecycle events reach the customers file's tenants through the registration service: it indexes them by
 * AWS identity at start, whatever the processor did. An EventBridge `License Deprovisioned` naming a file
 * tenant's license is applied (not `unknown_customer`), a legacy file tenant without a product code is found
 * under the plan's product, and `meterline customers` shows the statuses the events set.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../../src/redis/client.ts';
import { Keys } from '../../../src/redis/keys.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { cli } from '../../support/cli.ts';
import { deleteKeys, stackEnv, testLogger } from '../../support/harness.ts';
import { testPipeline } from '../../support/pipeline-env.ts';

const API_KEY = 'k3y-for-eventbridge-destinations-0123';
const PINNED = {
  customerAwsAccountId: '121212121212',
  licenseArn: 'arn:aws:license-manager::121212121212:license:l-p1',
};

describe('lifecycle events for customers-file tenants', () => {
  let registration: RunningRegistration | undefined;
  let run: string | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await registration?.stop();
    redis.disconnect();
    if (run) await deleteKeys(run);
  });

  it('are applied to them, and meterline customers shows their status', async () => {
    const tp = testPipeline('filevents', {
      customers: {
        pinned: PINNED,
        oldco: { customerIdentifier: 'cust-oldco' },
        other: { customerIdentifier: 'x' },
      },
      env: { METERLINE_REGISTRATION_LISTEN_PORT: '0', METERLINE_EVENTS_API_KEY: API_KEY },
    });
    run = tp.run;
    registration = await startRegistration(tp.config(['registration']), testLogger());
    const at = Date.parse('2026-11-02T10:00:00Z');
    const res = await fetch(`http://127.0.0.1:${registration.server.port}/marketplace/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-meterline-api-key': API_KEY },
      body: JSON.stringify({
        source: 'aws.agreement-marketplace',
        'detail-type': 'License Deprovisioned - Manager',
        time: new Date(at).toISOString(),
        detail: { license: { arn: PINNED.licenseArn }, product: { code: 'prod-test' } },
      }),
    });
    expect([res.status, (await res.text()).trim()]).toEqual([200, 'applied']);
    // The legacy form names no product: it is found under the plan's.
    expect(
      await registration.directory.applyStatus(
        { customerIdentifier: 'cust-oldco', productCode: 'prod-test' },
        'unsubscribe-pending',
        at,
      ),
    ).toEqual({ outcome: 'applied', tenant: 'oldco' });
    expect(await redis.hlen(new Keys(tp.run).customerFileIndex())).toBe(4);

    const listed = await cli(['customers', '-o', 'json'], tp.env);
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout) as { tenant: string; status: string; unsubscribedAt: string }[];
    expect(rows.map((r) => [r.tenant, r.status, r.unsubscribedAt])).toEqual([
      ['oldco', 'unsubscribe-pending', new Date(at).toISOString()],
      ['other', 'subscribed', ''],
      ['pinned', 'unsubscribed', new Date(at).toISOString()],
    ]);
  });
});
