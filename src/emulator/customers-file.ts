/**
 * The tenant → AWS customer mapping file, read by the emulator to know who is subscribed. Both shapes
 * are accepted because the pipeline supports both: `{customerAwsAccountId, licenseArn}` (new SaaS
 * integrations) and the legacy `{customerIdentifier, productCode}`. Unknown fields are ignored so the
 * same file can carry pipeline-only settings.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import type { CustomerSubscription } from './state.ts';

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

const mapping = z.record(z.string(), entry);

/** Every AWS id in the mapping becomes a subscription (an entry may carry both during a migration). */
export function subscriptionsFromMapping(json: unknown, source = 'customer mapping'): CustomerSubscription[] {
  const parsed = mapping.safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(
      source,
      parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`),
    );
  }
  const subs: CustomerSubscription[] = [];
  for (const e of Object.values(parsed.data)) {
    if (e.customerAwsAccountId !== undefined) {
      subs.push(withDefined({ id: e.customerAwsAccountId, licenseArn: e.licenseArn }));
    }
    if (e.customerIdentifier !== undefined) {
      subs.push(withDefined({ id: e.customerIdentifier, productCode: e.productCode }));
    }
  }
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
