/** The rules without HTTP: window edges with an injected clock, scoping, options, the mapping file. */
import { describe, expect, it } from 'vitest';
import { subscriptionsFromMapping } from '../../../src/emulator/customers-file.ts';
import { ServiceError } from '../../../src/emulator/service-error.ts';
import { EmulatorState } from '../../../src/emulator/state.ts';
import { ConfigError } from '../../../src/errors.ts';
import { FUTURE_TOLERANCE_MS } from '../../../src/metering/aws-window.ts';
import { ACCOUNT, HOUR, LICENSE, NOW } from '../../support/emulator.ts';

const seconds = (ms: number) => ms / 1000;

function record(timestampMs: number, extra: Record<string, unknown> = {}) {
  return {
    Timestamp: seconds(timestampMs),
    CustomerAWSAccountId: ACCOUNT,
    LicenseArn: LICENSE,
    Dimension: 'api_calls',
    Quantity: 1,
    ...extra,
  };
}

function thrown(fn: () => unknown): ServiceError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ServiceError) return error;
    throw error;
  }
  throw new Error('expected a ServiceError');
}

describe('EmulatorState windows', () => {
  it('accepts a BatchMeterUsage record exactly at its 24 h deadline and rejects it 1 ms later', () => {
    let now = NOW;
    const state = new EmulatorState({ now: () => now, customers: [ACCOUNT] });
    const ts = NOW - 24 * HOUR;
    expect(state.batchMeterUsage({ UsageRecords: [record(ts)] }).Results[0]?.Status).toBe('Success');
    now += 1;
    expect(thrown(() => state.batchMeterUsage({ UsageRecords: [record(ts, { Dimension: 'x' })] })).type).toBe(
      'TimestampOutOfBoundsException',
    );
  });

  it('uses FUTURE_TOLERANCE_MS from aws-window.ts for future timestamps', () => {
    const state = new EmulatorState({ now: () => NOW, customers: [ACCOUNT] });
    expect(
      state.batchMeterUsage({ UsageRecords: [record(NOW + FUTURE_TOLERANCE_MS)] }).Results[0]?.Status,
    ).toBe('Success');
    expect(
      thrown(() => state.batchMeterUsage({ UsageRecords: [record(NOW + FUTURE_TOLERANCE_MS + 1)] })).type,
    ).toBe('TimestampOutOfBoundsException');
  });

  it('gives MeterUsage 6 h by default and a configured window when set', () => {
    const body = (ts: number) => ({
      ProductCode: 'p',
      Timestamp: seconds(ts),
      UsageDimension: 'd',
      UsageQuantity: 1,
    });
    const state = new EmulatorState({ now: () => NOW });
    expect(state.meterUsage(body(NOW - 6 * HOUR), 'c').MeteringRecordId).toBeTypeOf('string');
    expect(thrown(() => state.meterUsage(body(NOW - 6 * HOUR - 1), 'c')).type).toBe(
      'TimestampOutOfBoundsException',
    );

    const wide = new EmulatorState({ now: () => NOW, windowMs: { MeterUsage: 8 * HOUR } });
    expect(wide.meterUsage(body(NOW - 7 * HOUR), 'c').MeteringRecordId).toBeTypeOf('string');
  });

  it('rejects a non-positive window at construction, naming every bad value', () => {
    expect(() => new EmulatorState({ windowMs: { BatchMeterUsage: 0, MeterUsage: -1 } })).toThrow(
      /windowMs.BatchMeterUsage .*; windowMs.MeterUsage/,
    );
  });
});

describe('EmulatorState dedupe scopes', () => {
  it('keeps ProductCode-scoped and license-only records apart (AWS bills both)', () => {
    const state = new EmulatorState({ now: () => NOW, customers: [ACCOUNT] });
    const a = state.batchMeterUsage({ UsageRecords: [record(NOW - HOUR)] });
    const b = state.batchMeterUsage({
      ProductCode: 'prod-x',
      UsageRecords: [record(NOW - HOUR, { Quantity: 2 })],
    });
    expect(a.Results[0]?.Status).toBe('Success');
    expect(b.Results[0]?.Status).toBe('Success');
    expect(state.snapshot().records.map((r) => r.productCode)).toEqual([undefined, 'prod-x']);
  });

  it('generates ids once, through the injectable generator', () => {
    let n = 0;
    const state = new EmulatorState({ now: () => NOW, customers: [ACCOUNT], newRecordId: () => `id-${++n}` });
    state.batchMeterUsage({ UsageRecords: [record(NOW - HOUR)] });
    const again = state.batchMeterUsage({ UsageRecords: [record(NOW - HOUR)] });
    expect(again.Results[0]?.MeteringRecordId).toBe('id-1');
    expect(n).toBe(1);
  });

  it('keeps subscriptions across reset', () => {
    const state = new EmulatorState({ now: () => NOW, customers: [ACCOUNT] });
    state.batchMeterUsage({ UsageRecords: [record(NOW - HOUR)] });
    state.reset();
    expect(state.snapshot().records).toEqual([]);
    expect(state.customers()).toEqual([{ id: ACCOUNT }]);
  });

  it('collects every constraint violation into one ValidationException', () => {
    const state = new EmulatorState({ now: () => NOW });
    const error = thrown(() =>
      state.batchMeterUsage({ UsageRecords: [{ Timestamp: seconds(NOW), Dimension: '', Quantity: -1 }] }),
    );
    expect(error.type).toBe('ValidationException');
    expect(error.message).toMatch(/^2 validation errors detected: /);
    expect(error.message).toContain("at 'usageRecords.1.member.dimension'");
    expect(error.message).toContain("at 'usageRecords.1.member.quantity'");
  });

  it('rejects wrongly typed JSON as SerializationException', () => {
    const state = new EmulatorState({ now: () => NOW });
    expect(
      thrown(() => state.batchMeterUsage({ UsageRecords: [record(NOW, { Timestamp: '2026-11-15' })] })).type,
    ).toBe('SerializationException');
  });

  it('enforces configured product codes and dimensions', () => {
    const state = new EmulatorState({ now: () => NOW, productCodes: ['p'], dimensions: ['d'] });
    const body = { ProductCode: 'p', Timestamp: seconds(NOW), UsageDimension: 'd' };
    expect(state.meterUsage(body, 'c').MeteringRecordId).toBeTypeOf('string');
    expect(thrown(() => state.meterUsage({ ...body, ProductCode: 'q' }, 'c')).type).toBe(
      'InvalidProductCodeException',
    );
    expect(thrown(() => state.meterUsage({ ...body, UsageDimension: 'e' }, 'c')).type).toBe(
      'InvalidUsageDimensionException',
    );
  });
});

describe('customer mapping file', () => {
  it('subscribes every AWS id, in both the license and the legacy shape', () => {
    const subs = subscriptionsFromMapping({
      acme: { customerAwsAccountId: '123456789012', licenseArn: LICENSE, extra: 'ignored' },
      globex: { customerIdentifier: 'abc', productCode: 'prod-x' },
      migrating: { customerAwsAccountId: '210987654321', customerIdentifier: 'def' },
    });
    expect(subs).toEqual([
      { id: '123456789012', licenseArn: LICENSE },
      { id: 'abc', productCode: 'prod-x' },
      { id: '210987654321' },
      { id: 'def' },
    ]);
  });

  it('lists every problem in one ConfigError', () => {
    const error = (() => {
      try {
        subscriptionsFromMapping({ a: {}, b: { customerAwsAccountId: 'x1' } });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toHaveLength(2);
  });
});
