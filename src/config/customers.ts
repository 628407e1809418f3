/**
 * The customers file maps the seller's tenant ids (the `customer` field of events) to AWS identities.
 * A tenant uses either the 2026 form (account id + license ARN) or the legacy CustomerIdentifier form,
 * never both, so a record can never mix them. A tenant on a contract-with-overage dimension carries its
 * contract: the period and the entitlement per dimension (GetEntitlements will feed this later).
 */
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { issueLines, readStructuredFile } from './load-file.ts';

export const ContractSchema = z
  .object({
    start: z.iso
      .datetime({ offset: true })
      .describe('start of the first contract period, e.g. 2026-01-01T00:00:00Z; periods repeat from it'),
    period: z.enum(['month', 'year']).default('month').describe('length of one contract period'),
    entitlements: z
      .record(z.string().min(1).max(255), z.number().nonnegative())
      .describe('dimension → quantity included in each period, in billed units'),
  })
  .strict();

export type Contract = z.infer<typeof ContractSchema>;

const SubscribedAt = z.iso
  .datetime({ offset: true })
  .optional()
  .describe('when the subscription started: hourly zero records begin at its hour');

const AccountForm = z
  .object({
    customerAwsAccountId: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account id'),
    licenseArn: z.string().regex(/^arn:aws[a-z-]*:license-manager:/, 'must be a License Manager ARN'),
    contract: ContractSchema.optional(),
    subscribedAt: SubscribedAt,
  })
  .strict();

const LegacyForm = z
  .object({
    customerIdentifier: z.string().min(1).max(255),
    productCode: z.string().min(1).max(255).optional(),
    contract: ContractSchema.optional(),
    subscribedAt: SubscribedAt,
  })
  .strict();

export const CustomerMappingSchema = z.union([AccountForm, LegacyForm], {
  error: 'use either {customerAwsAccountId, licenseArn} or {customerIdentifier}, not a mix',
});

export const CustomersSchema = z.record(z.string().min(1).max(128), CustomerMappingSchema);

export type CustomerMapping = z.infer<typeof CustomerMappingSchema>;
export type Customers = z.infer<typeof CustomersSchema>;

export function awsCustomerId(mapping: CustomerMapping): string {
  return 'customerAwsAccountId' in mapping ? mapping.customerAwsAccountId : mapping.customerIdentifier;
}

export function parseCustomers(raw: unknown, source = 'customers file'): Customers {
  const result = CustomersSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(source, issueLines(result.error.issues));
  return result.data;
}

export function loadCustomers(path: string): Customers {
  return parseCustomers(
    readStructuredFile(path, `customers file (METERLINE_CUSTOMERS=${path})`),
    `customers file ${path}`,
  );
}
