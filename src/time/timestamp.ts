/**
 * Event timestamps: ISO-8601 with `Z` or an explicit offset, or epoch milliseconds. A naive local time is
 * refused, because guessing the producer's time zone would bill usage into the wrong hour.
 */
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$/;
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

/** Earliest accepted epoch ms (2000-01-01); anything before is almost surely seconds sent as millis. */
export const MIN_EPOCH_MS = 946_684_800_000;
export const MAX_EPOCH_MS = 32_503_680_000_000; // year 3000

export type TimestampResult =
  | { ok: true; ms: number }
  | { ok: false; reason: 'timestamp_without_zone' | 'invalid_timestamp'; detail: string };

/** The common case, `2026-11-27T17:05:00Z` or `…:00.123Z`: no capture groups, no Date objects. */
const CANONICAL_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,3})?Z$/;

/** Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
export function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

const digit2 = (s: string, i: number) => (s.charCodeAt(i) - 48) * 10 + (s.charCodeAt(i + 1) - 48);

export function parseEventTimestamp(value: unknown): TimestampResult {
  if (typeof value === 'string' && CANONICAL_UTC.test(value)) {
    // Days up to 28 exist in every month: the arithmetic below needs no calendar check for them.
    const month = digit2(value, 5);
    const day = digit2(value, 8);
    const hour = digit2(value, 11);
    if (month >= 1 && month <= 12 && day >= 1 && day <= 28 && hour < 24) {
      const year = digit2(value, 0) * 100 + digit2(value, 2);
      const minute = digit2(value, 14);
      const second = digit2(value, 17);
      const millis = value.length > 20 ? Number(`0${value.slice(19, -1)}`) * 1000 : 0;
      const ms =
        daysFromCivil(year, month, day) * 86_400_000 +
        hour * 3_600_000 +
        minute * 60_000 +
        second * 1000 +
        Math.floor(millis);
      if (minute < 60 && second < 60 && ms >= MIN_EPOCH_MS && ms <= MAX_EPOCH_MS) return { ok: true, ms };
    }
  }
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < MIN_EPOCH_MS || value > MAX_EPOCH_MS) {
      return { ok: false, reason: 'invalid_timestamp', detail: `epoch milliseconds out of range: ${value}` };
    }
    return { ok: true, ms: value };
  }
  if (typeof value !== 'string') {
    return {
      ok: false,
      reason: 'invalid_timestamp',
      detail: 'timestamp must be an ISO-8601 string or epoch milliseconds',
    };
  }
  if (DATE_ONLY.test(value)) {
    return { ok: false, reason: 'timestamp_without_zone', detail: `date without time or zone: ${value}` };
  }
  const m = ISO.exec(value);
  if (!m) return { ok: false, reason: 'invalid_timestamp', detail: `not an ISO-8601 timestamp: ${value}` };
  const [, y, mo, d, h, mi, s, frac, z, sign, oh, om] = m;
  if (!z && !sign) {
    return { ok: false, reason: 'timestamp_without_zone', detail: `timestamp has no Z or offset: ${value}` };
  }
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s ?? 0);
  const millis = frac ? Math.floor(Number(`0.${frac}`) * 1000) : 0;
  const offsetMin = sign ? (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om)) : 0;
  const local = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  const check = new Date(local);
  // Date.UTC rolls 2026-02-30 over into March; a real calendar date round-trips unchanged.
  if (
    month < 1 ||
    month > 12 ||
    check.getUTCDate() !== day ||
    check.getUTCMonth() !== month - 1 ||
    hour > 23 ||
    minute > 59 ||
    second > 59 ||
    Math.abs(offsetMin) > 18 * 60 ||
    Number(om ?? 0) > 59
  ) {
    return { ok: false, reason: 'invalid_timestamp', detail: `no such date or time: ${value}` };
  }
  const ms = local - offsetMin * 60_000;
  if (ms < MIN_EPOCH_MS || ms > MAX_EPOCH_MS) {
    return { ok: false, reason: 'invalid_timestamp', detail: `timestamp out of range: ${value}` };
  }
  return { ok: true, ms };
}
