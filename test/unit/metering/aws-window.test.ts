import { describe, expect, it } from 'vitest';
import { acceptanceDeadline, isWithinAcceptanceWindow } from '../../../src/metering/aws-window.ts';

const t = (iso: string) => Date.parse(iso);

describe('AWS acceptance windows', () => {
  it('gives BatchMeterUsage 24 hours and MeterUsage 6 hours', () => {
    const hour = t('2026-11-15T10:00:00Z');
    expect(acceptanceDeadline('BatchMeterUsage', hour)).toBe(t('2026-11-16T10:00:00Z'));
    expect(acceptanceDeadline('MeterUsage', hour)).toBe(t('2026-11-15T16:00:00Z'));
  });

  it('accepts previous-month records only until 06:00 UTC on the 1st', () => {
    expect(acceptanceDeadline('BatchMeterUsage', t('2026-11-30T22:00:00Z'))).toBe(t('2026-12-01T06:00:00Z'));
    expect(acceptanceDeadline('BatchMeterUsage', t('2026-12-31T05:00:00Z'))).toBe(t('2027-01-01T05:00:00Z'));
    expect(
      isWithinAcceptanceWindow('BatchMeterUsage', t('2026-11-30T23:00:00Z'), t('2026-12-01T05:59:00Z')),
    ).toBe(true);
    expect(
      isWithinAcceptanceWindow('BatchMeterUsage', t('2026-11-30T23:00:00Z'), t('2026-12-01T06:01:00Z')),
    ).toBe(false);
  });

  it('refuses timestamps in the future', () => {
    const now = t('2026-11-27T17:00:00Z');
    expect(isWithinAcceptanceWindow('BatchMeterUsage', now + 60 * 60_000, now)).toBe(false);
    expect(isWithinAcceptanceWindow('BatchMeterUsage', now, now)).toBe(true);
  });
});
