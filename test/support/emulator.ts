/** Shared fixtures for the emulator tests: a fixed clock, real SDK clients, admin API access. */
import { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { EmulatorSnapshot } from '../../src/emulator/emulator-types.ts';

/** 2026-11-15T12:30:00Z: mid-month, so the previous-month cutoff plays no part unless a test moves it. */
export const NOW = Date.UTC(2026, 10, 15, 12, 30);
export const HOUR = 3_600_000;

export const ACCOUNT = '111122223333';
export const LICENSE = 'arn:aws:license-manager::123456789012:license:l-0123456789abcdef0';
export const LICENSED_ACCOUNT = '444455556666';
export const LICENSED_ACCOUNT_LICENSE = 'arn:aws:license-manager::123456789012:license:l-bbbbbbbbbbbbbbbbb';
export const LEGACY_CUSTOMER = 'legacy-cust-1';
export const PRODUCT = 'prod-abc123';

export const SUBSCRIBED = [
  ACCOUNT,
  { id: LICENSED_ACCOUNT, licenseArn: LICENSED_ACCOUNT_LICENSE },
  { id: LEGACY_CUSTOMER, productCode: PRODUCT },
];

export const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

export function sdkClient(endpoint: string | undefined, accessKeyId = 'test'): MarketplaceMeteringClient {
  return new MarketplaceMeteringClient({
    ...(endpoint === undefined ? {} : { endpoint }),
    region: 'us-east-1',
    credentials: { ...CREDENTIALS, accessKeyId },
    maxAttempts: 1,
  });
}

export async function snapshot(url: string): Promise<EmulatorSnapshot> {
  const res = await fetch(`${url}/_emulator/records`);
  return (await res.json()) as EmulatorSnapshot;
}

/** Calls the SDK and returns what it threw (fails the test if it did not throw). */
export async function rejection(promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await promise;
  } catch (error) {
    return error as Error & Record<string, unknown>;
  }
  throw new Error('expected the call to be rejected');
}

export function accountRecord(timestampMs: number, overrides: Record<string, unknown> = {}) {
  return {
    Timestamp: new Date(timestampMs),
    CustomerAWSAccountId: ACCOUNT,
    LicenseArn: LICENSE,
    Dimension: 'api_calls',
    Quantity: 10,
    ...overrides,
  };
}
