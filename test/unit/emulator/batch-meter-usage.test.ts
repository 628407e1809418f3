/** BatchMeterUsage rules, exercised through the real SDK v3 client against the emulator over HTTP. */
import {
  BatchMeterUsageCommand,
  type BatchMeterUsageCommandInput,
  InvalidCustomerIdentifierException,
  InvalidLicenseException,
  InvalidProductCodeException,
  InvalidTagException,
  InvalidUsageAllocationsException,
  type MarketplaceMeteringClient,
  MarketplaceMeteringServiceException,
  TimestampOutOfBoundsException,
} from '@aws-sdk/client-marketplace-metering';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import {
  ACCOUNT,
  accountRecord,
  HOUR,
  LEGACY_CUSTOMER,
  LICENSE,
  LICENSED_ACCOUNT,
  LICENSED_ACCOUNT_LICENSE,
  NOW,
  PRODUCT,
  rejection,
  SUBSCRIBED,
  sdkClient,
  snapshot,
} from '../../support/emulator.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HOUR_START = Date.UTC(2026, 10, 15, 11); // 11:00Z, 1.5 h before NOW

let clock = NOW;
let emulator: RunningEmulator;
let client: MarketplaceMeteringClient;

beforeAll(async () => {
  emulator = await startEmulator({ now: () => clock, customers: SUBSCRIBED });
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

const send = (input: BatchMeterUsageCommandInput) => client.send(new BatchMeterUsageCommand(input));

describe('BatchMeterUsage: acceptance and dedupe', () => {
  it('accepts a record, answers Success with a UUID and lists it under its UTC hour', async () => {
    const out = await send({ UsageRecords: [accountRecord(HOUR_START + 17 * 60_000)] });

    expect(out.UnprocessedRecords).toEqual([]);
    expect(out.Results).toHaveLength(1);
    const [result] = out.Results ?? [];
    expect(result?.Status).toBe('Success');
    expect(result?.MeteringRecordId).toMatch(UUID);
    expect(result?.UsageRecord?.CustomerAWSAccountId).toBe(ACCOUNT);
    expect(result?.UsageRecord?.Timestamp).toEqual(new Date(HOUR_START + 17 * 60_000));

    const { records } = await snapshot(emulator.url);
    expect(records).toEqual([
      {
        api: 'BatchMeterUsage',
        customer: ACCOUNT,
        customerType: 'account',
        licenseArn: LICENSE,
        dimension: 'api_calls',
        timestamp: '2026-11-15T11:00:00Z',
        quantity: 10,
        meteringRecordId: result?.MeteringRecordId,
        acceptedAt: new Date(NOW).toISOString(),
      },
    ]);
  });

  it('answers the same MeteringRecordId for the same hour and quantity, even at another minute', async () => {
    const first = await send({ UsageRecords: [accountRecord(HOUR_START)] });
    const again = await send({ UsageRecords: [accountRecord(HOUR_START + 59 * 60_000)] });

    expect(again.Results?.[0]?.Status).toBe('Success');
    expect(again.Results?.[0]?.MeteringRecordId).toBe(first.Results?.[0]?.MeteringRecordId);
    expect((await snapshot(emulator.url)).records).toHaveLength(1);
  });

  it('answers DuplicateRecord for another quantity in the same hour; the original stands', async () => {
    const first = await send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 10 })] });
    const dup = await send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 11 })] });

    expect(dup.Results?.[0]?.Status).toBe('DuplicateRecord');
    expect(dup.Results?.[0]?.MeteringRecordId).toBeUndefined();
    const snap = await snapshot(emulator.url);
    expect(snap.records.map((r) => [r.quantity, r.meteringRecordId])).toEqual([
      [10, first.Results?.[0]?.MeteringRecordId],
    ]);
    expect(snap.duplicates).toBe(1);
  });

  it('dedupes inside one call too, and keeps other hours and dimensions apart', async () => {
    const out = await send({
      UsageRecords: [
        accountRecord(HOUR_START, { Quantity: 5 }),
        accountRecord(HOUR_START, { Quantity: 6 }),
        accountRecord(HOUR_START - HOUR, { Quantity: 6 }),
        accountRecord(HOUR_START, { Quantity: 6, Dimension: 'storage_gb' }),
      ],
    });
    expect(out.Results?.map((r) => r.Status)).toEqual(['Success', 'DuplicateRecord', 'Success', 'Success']);
  });

  it('defaults Quantity to 0 when omitted (as the model documents)', async () => {
    const out = await send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: undefined })] });
    expect(out.Results?.[0]?.Status).toBe('Success');
    expect((await snapshot(emulator.url)).records[0]?.quantity).toBe(0);
  });
});

describe('BatchMeterUsage: size limits', () => {
  it('rejects 26 records with ValidationException, AWS wording, and records nothing', async () => {
    const records = Array.from({ length: 26 }, (_, i) => accountRecord(HOUR_START, { Dimension: `d${i}` }));
    const error = await rejection(send({ UsageRecords: records }));

    expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
    expect(error.name).toBe('ValidationException');
    expect(error.message).toBe(
      "1 validation error detected: Value at 'usageRecords' failed to satisfy constraint: " +
        'Member must have length less than or equal to 25',
    );
    expect((await snapshot(emulator.url)).records).toEqual([]);
  });

  it('accepts exactly 25 records', async () => {
    const records = Array.from({ length: 25 }, (_, i) => accountRecord(HOUR_START, { Dimension: `d${i}` }));
    const out = await send({ UsageRecords: records });
    expect(out.Results?.filter((r) => r.Status === 'Success')).toHaveLength(25);
  });

  it('rejects an empty batch with ValidationException', async () => {
    const error = await rejection(send({ UsageRecords: [] }));
    expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
    expect(error.name).toBe('ValidationException');
    expect(error.message).toContain('Member must have length greater than or equal to 1');
  });

  it('rejects a request body of 1 MB or more with 413 RequestEntityTooLargeException', async () => {
    const value = 'v'.repeat(256);
    const allocations = Array.from({ length: 2500 }, (_, i) => ({
      AllocatedUsageQuantity: i === 0 ? 10 : 0,
      Tags: [1, 2, 3, 4, 5].map((t) => ({ Key: `k${t}-${i}`, Value: value })),
    }));
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { UsageAllocations: allocations })] }),
    );

    expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
    expect(error.name).toBe('RequestEntityTooLargeException');
    expect((error.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(413);
  });
});

describe('BatchMeterUsage: acceptance window (src/metering/aws-window.ts)', () => {
  it('accepts a record 23 h old and rejects 25 h old with TimestampOutOfBoundsException', async () => {
    expect((await send({ UsageRecords: [accountRecord(NOW - 23 * HOUR)] })).Results?.[0]?.Status).toBe(
      'Success',
    );

    const error = await rejection(send({ UsageRecords: [accountRecord(NOW - 25 * HOUR)] }));
    expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
    expect(error.$fault).toBe('client');
  });

  it('rejects the WHOLE batch when any one record is out of the window', async () => {
    const error = await rejection(
      send({
        UsageRecords: [
          accountRecord(HOUR_START, { Dimension: 'fresh' }),
          accountRecord(NOW - 30 * HOUR, { Dimension: 'stale' }),
        ],
      }),
    );
    expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
    expect((await snapshot(emulator.url)).records).toEqual([]);
  });

  it('rejects records more than 5 minutes in the future', async () => {
    expect((await send({ UsageRecords: [accountRecord(NOW + 4 * 60_000)] })).Results?.[0]?.Status).toBe(
      'Success',
    );
    const error = await rejection(
      send({ UsageRecords: [accountRecord(NOW + 6 * 60_000, { Dimension: 'x' })] }),
    );
    expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
  });

  it('takes previous-month records only until 06:00 UTC on the 1st', async () => {
    const lastHourOfNovember = Date.UTC(2026, 10, 30, 23);
    clock = Date.UTC(2026, 11, 1, 5, 59);
    expect((await send({ UsageRecords: [accountRecord(lastHourOfNovember)] })).Results?.[0]?.Status).toBe(
      'Success',
    );
    clock = Date.UTC(2026, 11, 1, 6, 1); // only 7 h later: inside 24 h, but past the month cutoff
    const error = await rejection(
      send({ UsageRecords: [accountRecord(lastHourOfNovember, { Dimension: 'x' })] }),
    );
    expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
  });

  it('honours a configured window length', async () => {
    const narrow = await startEmulator({
      now: () => NOW,
      customers: [ACCOUNT],
      windowMs: { BatchMeterUsage: 2 * HOUR },
    });
    const narrowClient = sdkClient(narrow.url);
    try {
      const ok = await narrowClient.send(
        new BatchMeterUsageCommand({ UsageRecords: [accountRecord(NOW - HOUR)] }),
      );
      expect(ok.Results?.[0]?.Status).toBe('Success');
      const error = await rejection(
        narrowClient.send(new BatchMeterUsageCommand({ UsageRecords: [accountRecord(NOW - 3 * HOUR)] })),
      );
      expect(error).toBeInstanceOf(TimestampOutOfBoundsException);
    } finally {
      narrowClient.destroy();
      await narrow.close();
    }
  });
});

describe('BatchMeterUsage: customer identification', () => {
  it('rejects a record with both CustomerIdentifier and CustomerAWSAccountId', async () => {
    const error = await rejection(
      send({
        ProductCode: PRODUCT,
        UsageRecords: [accountRecord(HOUR_START, { CustomerIdentifier: LEGACY_CUSTOMER })],
      }),
    );
    expect(error).toBeInstanceOf(InvalidCustomerIdentifierException);
  });

  it('rejects a record with neither, failing the whole call', async () => {
    const error = await rejection(
      send({
        UsageRecords: [
          accountRecord(HOUR_START, { Dimension: 'ok' }),
          accountRecord(HOUR_START, { CustomerAWSAccountId: undefined }),
        ],
      }),
    );
    expect(error).toBeInstanceOf(InvalidCustomerIdentifierException);
    expect((await snapshot(emulator.url)).records).toEqual([]);
  });

  it('requires LicenseArn with CustomerAWSAccountId (InvalidLicenseException)', async () => {
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { LicenseArn: undefined })] }),
    );
    expect(error).toBeInstanceOf(InvalidLicenseException);
  });

  it("rejects a LicenseArn that is not the customer's known license", async () => {
    const wrong = accountRecord(HOUR_START, { CustomerAWSAccountId: LICENSED_ACCOUNT, LicenseArn: LICENSE });
    expect(await rejection(send({ UsageRecords: [wrong] }))).toBeInstanceOf(InvalidLicenseException);

    const right = { ...wrong, LicenseArn: LICENSED_ACCOUNT_LICENSE };
    expect((await send({ UsageRecords: [right] })).Results?.[0]?.Status).toBe('Success');
  });

  it('rejects the WHOLE call for one record with a license AWS never granted that customer, and records nothing', async () => {
    const good = accountRecord(HOUR_START, {
      CustomerAWSAccountId: LICENSED_ACCOUNT,
      LicenseArn: LICENSED_ACCOUNT_LICENSE,
    });
    const unknown = { ...good, Dimension: 'jobs', LicenseArn: `${LICENSED_ACCOUNT_LICENSE}-typo` };
    const error = await rejection(send({ UsageRecords: [good, unknown, { ...good, Dimension: 'other' }] }));
    expect(error).toBeInstanceOf(InvalidLicenseException);
    expect(error.message).toContain(`${LICENSED_ACCOUNT_LICENSE}-typo`);
    expect((await snapshot(emulator.url)).records).toEqual([]);
  });

  it("rejects another customer's license, even for a customer subscribed by id alone", async () => {
    // ACCOUNT has no license on record; LICENSED_ACCOUNT_LICENSE was granted to LICENSED_ACCOUNT.
    const borrowed = accountRecord(HOUR_START, { LicenseArn: LICENSED_ACCOUNT_LICENSE });
    expect(await rejection(send({ UsageRecords: [borrowed] }))).toBeInstanceOf(InvalidLicenseException);
    expect((await send({ UsageRecords: [accountRecord(HOUR_START)] })).Results?.[0]?.Status).toBe('Success');
  });

  it('knows a license after its agreement ended: its own license answers CustomerNotSubscribed, another one InvalidLicense', async () => {
    const account = '777788889999';
    const license = 'arn:aws:license-manager::123456789012:license:l-ended';
    const post = (body: unknown) =>
      fetch(`${emulator.url}/_emulator/customers`, { method: 'POST', body: JSON.stringify(body) });
    await post({ subscribe: [{ id: account, licenseArn: license }] });
    await post({ unsubscribe: [account] });
    const own = accountRecord(HOUR_START, { CustomerAWSAccountId: account, LicenseArn: license });
    expect((await send({ UsageRecords: [own] })).Results?.[0]?.Status).toBe('CustomerNotSubscribed');
    const other = { ...own, LicenseArn: `${license}-other` };
    expect(await rejection(send({ UsageRecords: [other] }))).toBeInstanceOf(InvalidLicenseException);
  });

  it('meters legacy CustomerIdentifier records, which need the request ProductCode', async () => {
    const legacy = {
      Timestamp: new Date(HOUR_START),
      CustomerIdentifier: LEGACY_CUSTOMER,
      Dimension: 'api_calls',
      Quantity: 3,
    };
    expect(await rejection(send({ UsageRecords: [legacy] }))).toBeInstanceOf(InvalidProductCodeException);

    const out = await send({ ProductCode: PRODUCT, UsageRecords: [legacy] });
    expect(out.Results?.[0]?.Status).toBe('Success');
    const [record] = (await snapshot(emulator.url)).records;
    expect(record).toMatchObject({
      customer: LEGACY_CUSTOMER,
      customerType: 'identifier',
      productCode: PRODUCT,
    });

    // Subscribed to PRODUCT only: another product's records are not honoured.
    const other = await send({ ProductCode: 'prod-other', UsageRecords: [legacy] });
    expect(other.Results?.[0]?.Status).toBe('CustomerNotSubscribed');
  });

  it('answers CustomerNotSubscribed per record (not an exception) and meters the rest', async () => {
    const out = await send({
      UsageRecords: [
        accountRecord(HOUR_START),
        accountRecord(HOUR_START, { CustomerAWSAccountId: '999999999999' }),
      ],
    });
    expect(out.Results?.map((r) => r.Status)).toEqual(['Success', 'CustomerNotSubscribed']);
    expect(out.Results?.[1]?.MeteringRecordId).toBeUndefined();
    expect((await snapshot(emulator.url)).records).toHaveLength(1);
  });

  it('follows subscriptions changed through the admin API', async () => {
    const stranger = accountRecord(HOUR_START, { CustomerAWSAccountId: '999999999999' });
    const post = (body: unknown) =>
      fetch(`${emulator.url}/_emulator/customers`, { method: 'POST', body: JSON.stringify(body) });

    await post({ subscribe: ['999999999999'] });
    expect((await send({ UsageRecords: [stranger] })).Results?.[0]?.Status).toBe('Success');

    await post({ unsubscribe: ['999999999999'] });
    const after = await send({ UsageRecords: [{ ...stranger, Dimension: 'other' }] });
    expect(after.Results?.[0]?.Status).toBe('CustomerNotSubscribed');
  });
});

describe('BatchMeterUsage: quantities and usage allocations', () => {
  it.each([
    [-1, 'Member must have value greater than or equal to 0'],
    [2_147_483_648, 'Member must have value less than or equal to 2147483647'],
  ])('rejects Quantity %d with ValidationException', async (quantity, constraint) => {
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: quantity })] }),
    );
    expect(error.name).toBe('ValidationException');
    expect(error.message).toContain(`at 'usageRecords.1.member.quantity'`);
    expect(error.message).toContain(constraint);
  });

  it('accepts the maximum quantity 2147483647', async () => {
    const out = await send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 2_147_483_647 })] });
    expect(out.Results?.[0]?.Status).toBe('Success');
  });

  it('rejects a fractional Quantity as a SerializationException', async () => {
    const error = await rejection(send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 1.5 })] }));
    expect(error).toBeInstanceOf(MarketplaceMeteringServiceException);
    expect(error.name).toBe('SerializationException');
  });

  it('accepts allocations that sum to the quantity and lists them', async () => {
    const allocations = [
      { AllocatedUsageQuantity: 7, Tags: [{ Key: 'team', Value: 'search' }] },
      { AllocatedUsageQuantity: 3, Tags: [{ Key: 'team', Value: 'ads/eu-west-1:x@y' }] },
    ];
    const out = await send({ UsageRecords: [accountRecord(HOUR_START, { UsageAllocations: allocations })] });
    expect(out.Results?.[0]?.Status).toBe('Success');
    expect((await snapshot(emulator.url)).records[0]?.usageAllocations).toEqual(allocations);
  });

  it('rejects allocations that do not sum to the quantity (InvalidUsageAllocationsException)', async () => {
    const allocations = [{ AllocatedUsageQuantity: 9, Tags: [{ Key: 'team', Value: 'search' }] }];
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { Quantity: 10, UsageAllocations: allocations })] }),
    );
    expect(error).toBeInstanceOf(InvalidUsageAllocationsException);
  });

  it('rejects two allocations with the same tag set (InvalidUsageAllocationsException)', async () => {
    const tags = [{ Key: 'team', Value: 'search' }];
    const allocations = [
      { AllocatedUsageQuantity: 5, Tags: tags },
      { AllocatedUsageQuantity: 5, Tags: tags },
    ];
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { UsageAllocations: allocations })] }),
    );
    expect(error).toBeInstanceOf(InvalidUsageAllocationsException);
  });

  it.each([
    ['six tags', Array.from({ length: 6 }, (_, i) => ({ Key: `k${i}`, Value: 'v' }))],
    ['a key over 100 characters', [{ Key: 'k'.repeat(101), Value: 'v' }]],
    ['a value over 256 characters', [{ Key: 'k', Value: 'v'.repeat(257) }]],
    ['an empty value', [{ Key: 'k', Value: '' }]],
    ['a character outside the pattern', [{ Key: 'k', Value: 'caf\u00e9' }]],
    ['a key outside the pattern', [{ Key: 'a{b}', Value: 'v' }]],
  ])('rejects %s with InvalidTagException', async (_, tags) => {
    const allocations = [{ AllocatedUsageQuantity: 10, Tags: tags }];
    const error = await rejection(
      send({ UsageRecords: [accountRecord(HOUR_START, { UsageAllocations: allocations })] }),
    );
    expect(error).toBeInstanceOf(InvalidTagException);
  });

  it('accepts exactly five tags with 100-char keys and 256-char values', async () => {
    const tags = Array.from({ length: 5 }, (_, i) => ({
      Key: `${i}`.padEnd(100, 'k'),
      Value: 'v'.repeat(256),
    }));
    const allocations = [{ AllocatedUsageQuantity: 10, Tags: tags }];
    const out = await send({ UsageRecords: [accountRecord(HOUR_START, { UsageAllocations: allocations })] });
    expect(out.Results?.[0]?.Status).toBe('Success');
  });
});
