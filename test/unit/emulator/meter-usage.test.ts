/** MeterUsage rules (AMI/container metering), through the real SDK v3 client. */
import {
  DuplicateRequestException,
  IdempotencyConflictException,
  type MarketplaceMeteringClient,
  MarketplaceMeteringServiceException,
  MeterUsageCommand,
  type MeterUsageCommandInput,
  TimestampOutOfBoundsException,
} from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { HOUR, NOW, PRODUCT, rejection, sdkClient, snapshot } from '../../support/emulator.ts';

let clock = NOW;
let emulator: RunningEmulator;
let client: MarketplaceMeteringClient;

beforeAll(async () => {
  emulator = await startEmulator({ now: () => clock });
  client = sdkClient(emulator.url);
});
afterAll(async () => {
  client.destroy();
  await emulator.close();
});
beforeEach(() => {
  clock = NOW;
  emulator.state.reset();
});

const HOUR_START = Date.UTC(2026, 10, 15, 11);

function input(overrides: Partial<MeterUsageCommandInput> = {}): MeterUsageCommandInput {
  return {
    ProductCode: PRODUCT,
    Timestamp: new Date(HOUR_START + 42 * 60_000),
    UsageDimension: 'vcpu_hours',
    UsageQuantity: 4,
    ClientToken: 'pod-a|vcpu_hours|2026-11-15T11',
    ...overrides,
  };
}

const send = (i: MeterUsageCommandInput, c = client) => c.send(new MeterUsageCommand(i));

describe('MeterUsage', () => {
  it('accepts a call and records it under the floored hour', async () => {
    const out = await send(input());
    expect(out.MeteringRecordId).toMatch(/^[0-9a-f-]{36}$/);
    expect((await snapshot(emulator.url)).records).toEqual([
      expect.objectContaining({
        api: 'MeterUsage',
        productCode: PRODUCT,
        customer: 'test', // the caller's access key id stands in for the instance/task/pod
        customerType: 'caller',
        dimension: 'vcpu_hours',
        timestamp: '2026-11-15T11:00:00Z',
        quantity: 4,
        meteringRecordId: out.MeteringRecordId,
      }),
    ]);
  });

  it('answers an identical call (same ClientToken) with the same MeteringRecordId', async () => {
    const first = await send(input());
    const again = await send(input());
    expect(again.MeteringRecordId).toBe(first.MeteringRecordId);
  });

  it('answers the same id for the same hour and quantity under a new token (the SDK fills in a random one)', async () => {
    const first = await send(input({ ClientToken: undefined }));
    const again = await send(input({ ClientToken: undefined, Timestamp: new Date(HOUR_START + 5 * 60_000) }));
    expect(again.MeteringRecordId).toBe(first.MeteringRecordId);
    expect((await snapshot(emulator.url)).records).toHaveLength(1);
  });

  it('raises DuplicateRequestException for another quantity in the same hour; the original stands', async () => {
    const first = await send(input());
    const error = await rejection(send(input({ ClientToken: 'another-token', UsageQuantity: 5 })));
    expect(error).toBeInstanceOf(DuplicateRequestException);
    const snap = await snapshot(emulator.url);
    expect(snap.records.map((r) => [r.quantity, r.meteringRecordId])).toEqual([[4, first.MeteringRecordId]]);
    expect(snap.duplicates).toBe(1);
  });

  it('raises IdempotencyConflictException (HTTP 409) when a ClientToken is reused with other parameters', async () => {
    await send(input());
    const error = await rejection(send(input({ UsageDimension: 'memory_gb' })));
    expect(error).toBeInstanceOf(IdempotencyConflictException);
    expect((error.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(409);
  });

  it('scopes records to the caller: another pod (credentials) may meter the same hour', async () => {
    const other = sdkClient(emulator.url, 'pod-b');
    try {
      const a = await send(input());
      const b = await send(input({ UsageQuantity: 9 }), other);
      expect(b.MeteringRecordId).not.toBe(a.MeteringRecordId);
    } finally {
      other.destroy();
    }
  });

  it('has a 6 h window: 5 h old is accepted, 7 h old is TimestampOutOfBoundsException', async () => {
    await send(input({ Timestamp: new Date(NOW - 5 * HOUR), ClientToken: 't5' }));
    const error = await rejection(send(input({ Timestamp: new Date(NOW - 7 * HOUR), ClientToken: 't7' })));
    expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
  });

  it('answers DryRun with DryRunOperation and records nothing', async () => {
    const error = await rejection(send(input({ DryRun: true })));
    expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
    expect(error.name).toBe('DryRunOperation');
    expect((await snapshot(emulator.url)).records).toEqual([]);
  });

  it('validates the required members', async () => {
    const error = await rejection(send(input({ UsageDimension: undefined })));
    expect(error.name).toBe('ValidationException');
    expect(error.message).toBe(
      "1 validation error detected: Value null at 'usageDimension' failed to satisfy constraint: " +
        'Member must not be null',
    );
  });
});
