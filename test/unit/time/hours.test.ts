import { describe, expect, it } from 'vitest';
import { HOUR_MS, hourEnd, hourIso, hourStart, monthStart } from '../../../src/time/hours.ts';
import { parseEventTimestamp } from '../../../src/time/timestamp.ts';

const ms = (iso: string) => {
  const r = parseEventTimestamp(iso);
  if (!r.ok) throw new Error(`${iso}: ${r.detail}`);
  return r.ms;
};

describe('hour windows (UTC)', () => {
  it.each([
    ['2026-11-27T17:59:59.999Z', '2026-11-27T17:00:00Z'],
    ['2026-11-27T18:00:00.000Z', '2026-11-27T18:00:00Z'],
    ['2026-11-27T23:59:59.999Z', '2026-11-27T23:00:00Z'],
    ['2026-11-28T00:00:00Z', '2026-11-28T00:00:00Z'],
    ['2026-11-30T23:30:00Z', '2026-11-30T23:00:00Z'],
    ['2026-12-01T00:00:00.001Z', '2026-12-01T00:00:00Z'],
    ['2026-12-31T23:59:59Z', '2026-12-31T23:00:00Z'],
    ['2027-01-01T00:00:00Z', '2027-01-01T00:00:00Z'],
    ['2028-02-29T12:34:56Z', '2028-02-29T12:00:00Z'],
  ])('%s falls in the hour starting %s', (at, start) => {
    expect(hourIso(hourStart(ms(at)))).toBe(start);
    expect(hourEnd(ms(at)) - hourStart(ms(at))).toBe(HOUR_MS);
  });

  it('crosses day, month and year boundaries in UTC', () => {
    expect(hourIso(hourEnd(ms('2026-12-31T23:10:00Z')))).toBe('2027-01-01T00:00:00Z');
    expect(hourIso(hourEnd(ms('2026-11-30T23:10:00Z')))).toBe('2026-12-01T00:00:00Z');
    expect(new Date(monthStart(ms('2026-12-31T23:59:59Z'))).toISOString()).toBe('2026-12-01T00:00:00.000Z');
    expect(new Date(monthStart(ms('2027-01-01T00:00:00Z'))).toISOString()).toBe('2027-01-01T00:00:00.000Z');
  });

  it('places offset timestamps in their UTC hour', () => {
    // 05:10 in India is 23:40 UTC the day before.
    expect(hourIso(hourStart(ms('2026-12-01T05:10:00+05:30')))).toBe('2026-11-30T23:00:00Z');
    // 16:30 on New Year's Eve in California is 00:30 UTC on New Year's Day.
    expect(hourIso(hourStart(ms('2026-12-31T16:30:00-08:00')))).toBe('2027-01-01T00:00:00Z');
    expect(ms('2026-11-27T12:00:00+0530')).toBe(ms('2026-11-27T06:30:00Z'));
    expect(ms('2026-11-27T12:00:00.5-08:00')).toBe(ms('2026-11-27T20:00:00.500Z'));
  });

  it('accepts epoch milliseconds as they are', () => {
    expect(ms(Date.UTC(2026, 10, 27, 17, 5) as unknown as string)).toBe(Date.UTC(2026, 10, 27, 17, 5));
  });

  it.each([
    ['2026-11-27T17:00:00', 'timestamp_without_zone'],
    ['2026-11-27 17:00', 'timestamp_without_zone'],
    ['2026-11-27', 'timestamp_without_zone'],
    ['2026-02-30T10:00:00Z', 'invalid_timestamp'],
    ['2026-11-27T24:00:00Z', 'invalid_timestamp'],
    ['2026-11-27T10:00:00+25:00', 'invalid_timestamp'],
    ['yesterday', 'invalid_timestamp'],
    [1_700_000_000, 'invalid_timestamp'], // epoch seconds sent as millis
    [1.5e12 + 0.5, 'invalid_timestamp'],
  ])('rejects %s as %s', (value, reason) => {
    const r = parseEventTimestamp(value);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toBe(reason);
  });
});

describe('timestamp parsing agrees with the platform on every valid instant', () => {
  it('for ISO-8601 UTC strings with 0, 1, 2 or 3 fraction digits', async () => {
    const fc = await import('fast-check');
    fc.assert(
      fc.property(
        fc.integer({ min: 946_684_800_000, max: 32_503_679_999_999 }),
        fc.integer({ min: 0, max: 3 }),
        (ms, digits) => {
          const full = new Date(ms).toISOString();
          const iso =
            digits === 3
              ? full
              : full.replace(/\.\d{3}Z$/, digits ? `.${full.slice(20, 20 + digits)}Z` : 'Z');
          const r = parseEventTimestamp(iso);
          return r.ok && r.ms === Date.parse(iso);
        },
      ),
      { numRuns: 20_000 },
    );
  });
});
