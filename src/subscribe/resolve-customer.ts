/**
 * ResolveCustomer, with the buyer waiting in a browser: a transient failure is retried briefly (backoff
 * with full jitter), and the token errors become meterline errors the registration page can explain.
 */
import { type MarketplaceMeteringClient, ResolveCustomerCommand } from '@aws-sdk/client-marketplace-metering';
import { MeterlineError } from '../errors.ts';
import { classifyAwsError } from '../metering/aws-errors.ts';
import { retry } from '../metering/retry.ts';
import type { ResolvedCustomer } from '../state/customer-directory.ts';

/** Attempts in all: the browser's request should not hang for more than a few seconds. */
const ATTEMPTS = 4;

export async function resolveCustomer(
  client: MarketplaceMeteringClient,
  token: string,
): Promise<ResolvedCustomer> {
  return retry(
    async () => {
      const out = await client.send(new ResolveCustomerCommand({ RegistrationToken: token }));
      if (!out.ProductCode || !(out.CustomerAWSAccountId || out.CustomerIdentifier)) {
        throw new MeterlineError('aws_error', 'ResolveCustomer answered without a product code or customer');
      }
      return {
        productCode: out.ProductCode,
        ...(out.CustomerAWSAccountId ? { customerAwsAccountId: out.CustomerAWSAccountId } : {}),
        ...(out.LicenseArn ? { licenseArn: out.LicenseArn } : {}),
        ...(out.CustomerIdentifier ? { customerIdentifier: out.CustomerIdentifier } : {}),
      };
    },
    { attempts: ATTEMPTS, backoff: { baseMs: 200, maxMs: 1_500 }, classify: toMeterlineError },
  );
}

function toMeterlineError(error: unknown): MeterlineError {
  if (error instanceof MeterlineError) return error;
  const name = (error as { name?: string })?.name;
  if (name === 'InvalidTokenException') {
    return new MeterlineError('registration_token_invalid', 'AWS does not know this registration token', {
      cause: error,
    });
  }
  if (name === 'ExpiredTokenException') {
    return new MeterlineError('registration_token_expired', 'the registration token has expired', {
      cause: error,
    });
  }
  return classifyAwsError(error);
}
