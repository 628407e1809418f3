/**
 * `meterline customers`: the customer directory that registration fills (tenant, AWS identity, status),
 * next to the tenants of the customers file, so an operator sees who is billed under which identity.
 */
import Table from 'cli-table3';
import type { Command } from 'commander';
import { awsCustomerId, type CustomerMap } from '../config/customers.ts';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory, type DirectoryEntry, defaultTenant } from '../subscribe/customer-directory.ts';
import { loadConfigOrExit } from './lifecycle.ts';

const STYLE = process.stdout.isTTY ? {} : { head: [], border: [] };

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
  program
    .command('customers')
    .description('tenants and their AWS identities: the customers file and the registered customer directory')
    .option('--json', 'print the list as JSON')
    .option(
      '--status <status>',
      'only tenants with this status (subscribed, unsubscribe-pending, …; file tenants count as subscribed)',
    )
    .action(async (o: { json?: boolean; status?: string }) => {
      const config = loadConfigOrExit(['directory']);
      const redis = createRedis(config.redis.url, config.redis);
      try {
        const registered = await new CustomerDirectory(redis, new Keys(config.redis.prefix)).all();
        const rows = customerRows(config.customerMap, registered).filter(
          (r) => !o.status || r.status === o.status,
        );
        if (o.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        const table = new Table({
          head: ['tenant', 'source', 'AWS id', 'product', 'status', 'subscribed at', 'unsubscribed at'],
          style: STYLE,
        });
        for (const r of rows) {
          table.push([
            r.tenant,
            r.source,
            r.awsId,
            r.productCode,
            r.status,
            r.subscribedAt,
            r.unsubscribedAt,
          ]);
        }
        process.stdout.write(`${table.toString()}\n${rows.length} tenant(s)\n`);
      } finally {
        redis.disconnect();
      }
    });
}

/** The file's tenants win where both name one (as in the worker); sorted by tenant. */
export function customerRows(file: CustomerMap, registered: readonly DirectoryEntry[]): CustomerRow[] {
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
    rows.set(tenant, {
      tenant,
      source: 'file',
      awsId: awsCustomerId(m),
      licenseArn: 'licenseArn' in m ? m.licenseArn : '',
      productCode: 'productCode' in m ? (m.productCode ?? '') : '',
      status: 'subscribed',
      subscribedAt: m.subscribedAt ?? '',
      unsubscribedAt: '',
    });
  }
  return [...rows.values()].sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
}
