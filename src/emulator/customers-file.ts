/**
 * The tenant → AWS customer mapping file, read by the emulator to know who is subscribed. Both shapes
 * are accepted because the pipeline supports both: `{customerAwsAccountId, licenseArn}` (new SaaS
 * integrations) and the legacy `{customerIdentifier, productCode}`. Unknown fields are ignored so the
 * same file can carry pipeline-only settings.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import type { CustomerSubscription } from './subscriptions.ts';

const entry = z
  .looseObject({
    customerAwsAccountId: z
      .string()
      .regex(/^[0-9]+$/, 'must be digits only')
      .optional(),
    licenseArn: z.string().startsWith('arn:aws').optional(),
    customerIdentifier: z.string().min(1).optional(),
    productCode: z.string().min(1).optional(),
  })
  .refine((e) => e.customerAwsAccountId !== undefined || e.customerIdentifier !== undefined, {
    message: 'needs customerAwsAccountId or customerIdentifier',
  });

/** Every AWS id in the mapping becomes a subscription (an entry may carry both during a migration). */
export function subscriptionsFromMapping(json: unknown, source = 'customer mapping'): CustomerSubscription[] {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(source, ['(root): expected an object of tenant → mapping']);
  }
  const problems: string[] = [];
  const subs: CustomerSubscription[] = [];
  // Own keys, each checked: zod's record would skip (and drop) a tenant named `__proto__`.
  for (const [tenant, value] of Object.entries(json)) {
    const parsed = entry.safeParse(value);
    if (!parsed.success) {
      for (const i of parsed.error.issues)
        problems.push(`${[tenant, ...i.path].map(String).join('.')}: ${i.message}`);
      continue;
    }
    const e = parsed.data;
    if (e.customerAwsAccountId !== undefined) {
      subs.push(withDefined({ id: e.customerAwsAccountId, licenseArn: e.licenseArn }));
    }
    if (e.customerIdentifier !== undefined) {
      subs.push(withDefined({ id: e.customerIdentifier, productCode: e.productCode }));
    }
  }
  if (problems.length) throw new ConfigError(source, problems);
  return subs;
}

export async function loadCustomersFile(path: string): Promise<CustomerSubscription[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new ConfigError(path, [`cannot read JSON: ${(error as Error).message}`]);
  }
  return subscriptionsFromMapping(json, path);
}

function withDefined(sub: { id: string; licenseArn?: string | undefined; productCode?: string | undefined }) {
  const out: CustomerSubscription = { id: sub.id };
  if (sub.licenseArn !== undefined) out.licenseArn = sub.licenseArn;
  if (sub.productCode !== undefined) out.productCode = sub.productCode;
  return out;
}
