/**
 * `meterline customers`: the customer directory that registration fills (tenant, AWS identity, status),
 * next to the tenants of the customers file, so an operator sees who is billed under which identity.
 * `--unmapped`: the usage the commit stage holds for tenants without an AWS identity, with the time each
 * tenant's first record will be dead-lettered.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { awsCustomerId, type CustomerMap } from '../config/customers.ts';
import { acceptanceDeadline, type MeteringApi } from '../metering/aws-window.ts';
import { Keys } from '../redis/keys.ts';
import {
  CustomerDirectory,
  type DirectoryEntry,
  defaultTenant,
  type FileTenantStatus,
  isTenantId,
} from '../state/customer-directory.ts';
import { HandoffNonces } from '../state/handoff-nonces.ts';
import { type HeldRecord, heldUsage } from '../state/held-records.ts';
import { verifyHandoff } from '../subscribe/handoff.ts';
import { linkTenant } from '../subscribe/link-tenant.ts';
import { hourIso } from '../time/hours.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { type TimeoutOptions, withRedis, withTimeout } from './one-shot.ts';
import { type OutputOptions, printData, renderTable, withExamples, withOutput } from './output.ts';

export interface CustomerRow {
  tenant: string;
  source: 'file' | 'registration';
  awsId: string;
  licenseArn: string;
  productCode: string;
  status: string;
  subscribedAt: string;
  unsubscribedAt: string;
}

export function registerCustomersCommand(program: Command): void {
  const customers = program
    .command('customers')
    .description('tenants and their AWS identities: the customers file and the registered customer directory')
    .option(
      '--unmapped',
      'usage held for tenants without an AWS identity, with when it will be dead-lettered',
    )
    .option(
      '--status <status>',
      'only tenants with this status (subscribed, unsubscribe-pending, …; a file tenant no lifecycle event reached is subscribed)',
    );
  withExamples(withTimeout(withOutput(customers)), [
    'meterline customers',
    'meterline customers --status unsubscribe-pending -o json',
    'meterline customers --unmapped',
  ]).action(async (o: OutputOptions & TimeoutOptions & { status?: string; unmapped?: boolean }) => {
    const config = loadConfigOrExit(['directory']);
    await withRedis(config, o, async (redis) => {
      if (o.unmapped) {
        const held = await heldUsage(redis, new Keys(config.redis.prefix), config.topics.usage);
        const rows = unmappedRows(held, config.worker.api, config.window.submitMarginMs);
        printData(o, rows, () => {
          const table = renderTable(
            ['tenant', 'hours', 'records', 'held since', 'dead-lettered at'],
            rows.map((r) => [r.tenant, hoursCell(r.hours), r.records, r.heldSince, r.deadLetterAt]),
          );
          const records = rows.reduce((n, r) => n + r.records, 0);
          return `${table}\n${records} record(s) held for ${rows.length} tenant(s)\n`;
        });
        return;
      }
      const directory = new CustomerDirectory(redis, new Keys(config.redis.prefix));
      const registered = await directory.all();
      const rows = customerRows(config.customerMap, registered, await directory.fileStatuses()).filter(
        (r) => !o.status || r.status === o.status,
      );
      printData(o, rows, () => {
        const table = renderTable(
          ['tenant', 'source', 'AWS id', 'product', 'status', 'subscribed at', 'unsubscribed at'],
          rows.map((r) => [
            r.tenant,
            r.source,
            r.awsId,
            r.productCode,
            r.status,
            r.subscribedAt,
            r.unsubscribedAt,
          ]),
        );
        return `${table}\n${rows.length} tenant(s)\n`;
      });
    });
  });
  registerLinkCommand(customers);
}

/**
 * `meterline customers link --token … --tenant …`: the seller's backend links its own tenant id to the
 * buyer's AWS identity with the hand-off token its onboarding page received (as POST /marketplace/link).
 */
function registerLinkCommand(customers: Command): void {
  const link = customers
    .command('link')
    .description(
      "link your application's tenant id to the buyer a hand-off token names: its usage events then carry that id",
    )
    .requiredOption('--token <token>', 'the hand-off token your onboarding page received (handoff_token)')
    .requiredOption(
      '--tenant <id>',
      'your tenant id for this buyer: the customer of its usage events from now on',
      (value: string) => {
        if (!isTenantId(value))
          throw new InvalidArgumentError('1 to 128 characters, without control characters');
        return value;
      },
    )
    .addHelpText(
      'after',
      `
Required: METERLINE_HANDOFF_SIGNING_SECRET (the registration service's), REDIS_URL and METERLINE_PLAN;
METERLINE_REDIS_PREFIX as the registration service's if it is not the default, and METERLINE_CUSTOMERS if
you use a customers file. The token is spent by the link (do not also run handoff verify on it). Refused
with exit 1: handoff_token_invalid, handoff_token_expired, handoff_token_reused, tenant_taken,
subscription_not_found.`,
    );
  withExamples(withTimeout(withOutput(link, 'json')), [
    'meterline customers link --token "$HANDOFF_TOKEN" --tenant acme-corp',
  ]).action(async (o: OutputOptions & TimeoutOptions & { token: string; tenant: string }) => {
    const config = loadConfigOrExit(['handoff']);
    const secret = config.registration.handoffSecret as string;
    // A forged, malformed or expired token is refused before Redis is contacted.
    verifyHandoff(o.token, secret);
    await withRedis(config, o, async (redis) => {
      const keys = new Keys(config.redis.prefix);
      const linked = await linkTenant(
        { token: o.token, tenant: o.tenant },
        {
          directory: new CustomerDirectory(redis, keys),
          customerMap: config.customerMap,
          secret,
          nonces: new HandoffNonces(redis, keys),
        },
      );
      printData(
        o,
        linked,
        () =>
          `${renderTable(
            ['field', 'value'],
            Object.entries(linked).map(([k, v]) => [k, String(v)]),
          )}\n`,
      );
    });
  });
}

/** The file's tenants win where both name one (as in the worker); sorted by tenant. */
export function customerRows(
  file: CustomerMap,
  registered: readonly DirectoryEntry[],
  fileStatuses: ReadonlyMap<string, FileTenantStatus> = new Map(),
): CustomerRow[] {
  const rows = new Map<string, CustomerRow>();
  for (const e of registered) {
    rows.set(e.tenant, {
      tenant: e.tenant,
      source: 'registration',
      awsId: defaultTenant(e),
      licenseArn: e.licenseArn ?? '',
      productCode: e.productCode,
      status: e.status,
      subscribedAt: e.subscribedAt,
      unsubscribedAt: e.unsubscribedAt ?? '',
    });
  }
  for (const [tenant, m] of file) {
    const status = fileStatuses.get(tenant);
    rows.set(tenant, {
      tenant,
      source: 'file',
      awsId: awsCustomerId(m),
      licenseArn: 'licenseArn' in m ? m.licenseArn : '',
      productCode: 'productCode' in m ? (m.productCode ?? '') : '',
      status: status?.status ?? 'subscribed',
      subscribedAt: m.subscribedAt ?? '',
      unsubscribedAt: status?.unsubscribedAt ?? '',
    });
  }
  return [...rows.values()].sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
}

/** Usage held for a tenant without an AWS identity (`meterline customers --unmapped`). */
export interface UnmappedRow {
  tenant: string;
  /** The hours (ISO) it holds records of, oldest first. */
  hours: string[];
  /** Held records: one per hour and dimension. */
  records: number;
  /** ISO: when the first of them was held. */
  heldSince: string;
  /** ISO: when its oldest hour is dead-lettered (AWS's deadline for the hour minus the submit margin). */
  deadLetterAt: string;
}

/** Held records per tenant, sorted by tenant. */
export function unmappedRows(
  held: readonly HeldRecord[],
  api: MeteringApi,
  submitMarginMs: number,
): UnmappedRow[] {
  const byTenant = new Map<string, HeldRecord[]>();
  for (const r of held) byTenant.set(r.tenant, [...(byTenant.get(r.tenant) ?? []), r]);
  return [...byTenant]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([tenant, records]) => {
      const hours = [...new Set(records.map((r) => r.hourMs))].sort((a, b) => a - b);
      const since = records.reduce((min, r) => Math.min(min, r.sinceMs), Number.POSITIVE_INFINITY);
      const deadLetterAt = Math.min(...hours.map((h) => acceptanceDeadline(api, h) - submitMarginMs));
      return {
        tenant,
        hours: hours.map(hourIso),
        records: records.length,
        heldSince: new Date(since).toISOString(),
        deadLetterAt: new Date(deadLetterAt).toISOString(),
      };
    });
}

/** A tenant's hours in a table cell: the count, and the first and last. */
function hoursCell(hours: readonly string[]): string {
  if (hours.length === 1) return hours[0] as string;
  return `${hours.length}: ${hours[0]} … ${hours.at(-1)}`;
}
