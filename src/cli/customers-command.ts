/**
 * `meterline customers`: the customer directory that registration fills (tenant, AWS identity, status),
 * next to the tenants of the customers file, so an operator sees who is billed under which identity.
 */
import type { Command } from 'commander';
import { awsCustomerId, type CustomerMap } from '../config/customers.ts';
import { Keys } from '../redis/keys.ts';
import {
  CustomerDirectory,
  type DirectoryEntry,
  defaultTenant,
  type FileTenantStatus,
} from '../subscribe/customer-directory.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { oneShotRedis, reach, type TimeoutOptions, timeoutMs, withTimeout } from './one-shot.ts';
import {
  type OutputOptions,
  outputFormat,
  printData,
  renderTable,
  withExamples,
  withOutput,
} from './output.ts';

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
      '--status <status>',
      'only tenants with this status (subscribed, unsubscribe-pending, …; a file tenant no lifecycle event reached is subscribed)',
    );
  withExamples(withTimeout(withOutput(customers)), [
    'meterline customers',
    'meterline customers --status unsubscribe-pending -o json',
  ]).action(async (o: OutputOptions & TimeoutOptions & { status?: string }) => {
    const config = loadConfigOrExit(['directory']);
    const { redis, check } = oneShotRedis(config.redis);
    try {
      await reach(timeoutMs(o), [check]);
      const directory = new CustomerDirectory(redis, new Keys(config.redis.prefix));
      const registered = await directory.all();
      const rows = customerRows(config.customerMap, registered, await directory.fileStatuses()).filter(
        (r) => !o.status || r.status === o.status,
      );
      printData(outputFormat(o), rows, () => {
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
    } finally {
      redis.disconnect();
    }
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
