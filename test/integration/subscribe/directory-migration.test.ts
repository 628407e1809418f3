/**
 * Issue 17, point 3: a directory of the earlier form (one entry per tenant, index values naming the
 * tenant) moves to one entry per product subscription when the registration service starts, with every
 * entry kept under its own product, its index with it, and a second run changing nothing. A lifecycle event
 * sent to the started service then finds the migrated entry through its license.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../../src/redis/client.ts';
import { FIELD_SEPARATOR, Keys } from '../../../src/redis/keys.ts';
import { CustomerDirectory, type DirectoryEntry } from '../../../src/state/customer-directory.ts';
import { type RunningRegistration, startRegistration } from '../../../src/subscribe/registration.ts';
import { deleteKeys, stackEnv, testLogger } from '../../support/harness.ts';
import { testPipeline } from '../../support/pipeline-env.ts';

const API_KEY = 'k'.repeat(40);
const L1 = 'arn:aws:license-manager::111111111111:license:l-m1';
const L2 = 'arn:aws:license-manager::222222222222:license:l-m2';
/** A license of a product whose registration the old form overwrote: it names no entry any more. */
const L_OLD = 'arn:aws:license-manager::111111111111:license:l-m0';

const OLD_ENTRIES: DirectoryEntry[] = [
  {
    tenant: 'acme',
    productCode: 'prod-test',
    customerAwsAccountId: '111111111111',
    licenseArn: L1,
    status: 'subscribed',
    subscribedAt: '2026-11-01T10:00:00.000Z',
    eventMs: Date.parse('2026-11-01T10:00:00Z'),
  },
  {
    tenant: 'globex',
    productCode: 'prod-other',
    customerAwsAccountId: '222222222222',
    licenseArn: L2,
    status: 'unsubscribed',
    subscribedAt: '2026-10-01T10:00:00.000Z',
    unsubscribedAt: '2026-11-01T09:00:00.000Z',
    eventMs: Date.parse('2026-11-01T09:00:00Z'),
  },
  {
    tenant: 'legacy',
    productCode: 'prod-test',
    customerIdentifier: 'cust-legacy',
    status: 'unsubscribe-pending',
    subscribedAt: '2026-09-01T10:00:00.000Z',
    unsubscribedAt: '2026-11-01T08:00:00.000Z',
    eventMs: Date.parse('2026-11-01T08:00:00Z'),
  },
];
const OLD_INDEX: Record<string, string> = {
  [`license:${L1}`]: 'acme',
  'account:prod-test:111111111111': 'acme',
  [`license:${L_OLD}`]: 'acme',
  [`license:${L2}`]: 'globex',
  'account:prod-other:222222222222': 'globex',
  'identifier:prod-test:cust-legacy': 'legacy',
};

describe('a customer directory of the earlier form', () => {
  let registration: RunningRegistration | undefined;
  let run: string | undefined;
  const redis = createRedis(stackEnv().redisUrl);
  afterAll(async () => {
    await registration?.stop();
    redis.disconnect();
    if (run) await deleteKeys(run);
  });

  it('migrates at start with every entry kept, once, and events find the entries after', async () => {
    const tp = testPipeline('dirmigrate', {
      customers: {},
      env: { METERLINE_REGISTRATION_LISTEN_PORT: '0', METERLINE_EVENTS_API_KEY: API_KEY },
    });
    run = tp.run;
    const keys = new Keys(tp.run);
    await redis.hset(
      keys.customerDirectory(),
      new Map(OLD_ENTRIES.map((e) => [e.tenant, JSON.stringify(e)])),
    );
    await redis.hset(keys.customerIndex(), OLD_INDEX);

    registration = await startRegistration(tp.config(['registration']), testLogger());

    // Migrated by the start itself: read raw, before any directory call.
    const field = (tenant: string, product: string) => `${tenant}${FIELD_SEPARATOR}${product}`;
    const raw = await redis.hgetall(keys.customerSubscriptions());
    expect(Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, JSON.parse(v)]))).toEqual({
      [field('acme', 'prod-test')]: OLD_ENTRIES[0],
      [field('globex', 'prod-other')]: OLD_ENTRIES[1],
      [field('legacy', 'prod-test')]: OLD_ENTRIES[2],
    });
    expect(await redis.hgetall(keys.customerSubscriptionIndex())).toEqual({
      [`license:${L1}`]: field('acme', 'prod-test'),
      'account:prod-test:111111111111': field('acme', 'prod-test'),
      [`license:${L2}`]: field('globex', 'prod-other'),
      'account:prod-other:222222222222': field('globex', 'prod-other'),
      'identifier:prod-test:cust-legacy': field('legacy', 'prod-test'),
    });
    // The earlier form is left as it was (a rollback reads it).
    expect(await redis.hlen(keys.customerDirectory())).toBe(3);

    // Idempotent: a second run (another replica starting) moves nothing and changes nothing.
    expect(await new CustomerDirectory(redis, keys).migrate()).toBe(-1);
    expect(await redis.hlen(keys.customerSubscriptions())).toBe(3);

    // A lifecycle event naming a migrated license applies to that entry.
    const at = Date.parse('2026-11-02T10:00:00Z');
    const res = await fetch(`http://127.0.0.1:${registration.server.port}/marketplace/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-meterline-api-key': API_KEY },
      body: JSON.stringify({
        source: 'aws.agreement-marketplace',
        'detail-type': 'License Deprovisioned - Manager',
        time: new Date(at).toISOString(),
        detail: { license: { arn: L1 }, product: { code: 'prod-test' } },
      }),
    });
    expect([res.status, (await res.text()).trim()]).toEqual([200, 'applied']);
    const directory = new CustomerDirectory(redis, keys);
    const byTenant = new Map((await directory.all()).map((e) => [e.tenant, e.status]));
    expect(Object.fromEntries(byTenant)).toEqual({
      acme: 'unsubscribed',
      globex: 'unsubscribed',
      legacy: 'unsubscribe-pending',
    });
    expect(await directory.tenantOf({ licenseArn: L_OLD })).toBeUndefined();
  }, 60_000);
});
