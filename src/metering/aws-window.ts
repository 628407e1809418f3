/**
 * AWS Marketplace Metering acceptance windows (late 2026): BatchMeterUsage takes records up to 24 h old,
 * and previous-month records only until 06:00 UTC on the 1st; MeterUsage takes 6 h. Shared by the
 * processor (too_old), the worker (deadlines) and the emulator, so all three agree on one rule.
 */
import { HOUR_MS, monthStart } from '../time/hours.ts';

export type MeteringApi = 'BatchMeterUsage' | 'MeterUsage';

export const DEFAULT_ACCEPTANCE_WINDOW_MS: Record<MeteringApi, number> = {
  BatchMeterUsage: 24 * HOUR_MS,
  MeterUsage: 6 * HOUR_MS,
};

/** How far ahead of AWS's clock a Timestamp may be before it is out of bounds. */
export const FUTURE_TOLERANCE_MS = 5 * 60_000;

const PREVIOUS_MONTH_CUTOFF_MS = 6 * HOUR_MS;

/** The last instant at which AWS still accepts a record stamped `timestampMs`. */
export function acceptanceDeadline(
  api: MeteringApi,
  timestampMs: number,
  windowMs: number = DEFAULT_ACCEPTANCE_WINDOW_MS[api],
): number {
  const deadline = timestampMs + windowMs;
  if (api !== 'BatchMeterUsage') return deadline;
  const d = new Date(monthStart(timestampMs));
  const nextMonth = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  return Math.min(deadline, nextMonth + PREVIOUS_MONTH_CUTOFF_MS);
}

export function isWithinAcceptanceWindow(
  api: MeteringApi,
  timestampMs: number,
  nowMs: number,
  windowMs: number = DEFAULT_ACCEPTANCE_WINDOW_MS[api],
): boolean {
  return (
    timestampMs <= nowMs + FUTURE_TOLERANCE_MS && nowMs <= acceptanceDeadline(api, timestampMs, windowMs)
  );
}
