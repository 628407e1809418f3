/**
 * One AWS account buying two products of one plan (prod-a: `a_calls`, prod-b: `b_calls`), each with its
 * own license, as AWS grants them: the emulator's customers, the plan file and the directory entries the
 * registration URL would store. For the tests of per-product billing, holding and flushing.
 */
import type { RunningPipeline } from '../../src/app/pipeline.ts';
import type { CustomerSubscription } from '../../src/emulator/subscriptions.ts';
import type { CustomerDirectory } from '../../src/state/customer-directory.ts';
import { writeTempJson } from './harness.ts';

export type Product = 'prod-a' | 'prod-b';

export interface TwoProductBuyer {
  account: string;
  license: Record<Product, string>;
  /** The emulator's customers: the account once per product, with that product's license. */
  emulatorCustomers: CustomerSubscription[];
  /** Stores the buyer's registration for one product, as the registration URL does. */
  register(directory: CustomerDirectory, product: Product, atMs: number): Promise<unknown>;
}

export function twoProductBuyer(account: string, licenseTag: string): TwoProductBuyer {
  const license = {
    'prod-a': `arn:aws:license-manager::${account}:license:l-${licenseTag}a`,
    'prod-b': `arn:aws:license-manager::${account}:license:l-${licenseTag}b`,
  };
  return {
    account,
    license,
    emulatorCustomers: (['prod-a', 'prod-b'] as const).map((productCode) => ({
      id: account,
      licenseArn: license[productCode],
      productCode,
    })),
    register: (directory, productCode, atMs) =>
      directory.register(
        account,
        { productCode, customerAwsAccountId: account, licenseArn: license[productCode] },
        atMs,
      ),
  };
}

/** The plan of the two products, one dimension each with `dimension`'s settings: its file, for METERLINE_PLAN. */
export function twoProductPlan(dimension: Record<string, unknown> = { model: 'hourly' }): string {
  return writeTempJson('plan.json', {
    products: [
      { productCode: 'prod-a', dimensions: [{ name: 'a_calls', ...dimension }] },
      { productCode: 'prod-b', dimensions: [{ name: 'b_calls', ...dimension }] },
    ],
  });
}

/** How many messages of the usage topic the pipeline's tasks have applied: their checkpoints, summed. */
export async function appliedMessages(pipeline: RunningPipeline): Promise<number> {
  const tasks = (await pipeline.processor?.app.tasks()) ?? [];
  return tasks.reduce((sum, t) => sum + Number((t.restorePoint.checkpoint ?? -1n) + 1n), 0);
}
