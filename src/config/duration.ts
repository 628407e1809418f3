/**
 * Durations in config are written with a unit: `250ms`, `30s`, `5m`, `2h`, `1d`. A bare number is refused
 * (it used to mean milliseconds, so `METERLINE_WINDOW_GRACE=300` silently meant 0.3 s).
 */
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m?.[1] || !m[2]) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** A number with no unit: worth its own message, since it used to be accepted as milliseconds. */
export function lacksUnit(text: string): boolean {
  return /^\s*\d+(?:\.\d+)?\s*$/.test(text);
}

export function formatDuration(ms: number): string {
  if (ms % UNIT_MS.h === 0) return `${ms / UNIT_MS.h}h`;
  if (ms % UNIT_MS.m === 0) return `${ms / UNIT_MS.m}m`;
  if (ms % UNIT_MS.s === 0) return `${ms / UNIT_MS.s}s`;
  return `${ms}ms`;
}
