/** Hour-window arithmetic. Everything is UTC epoch milliseconds; no local time zone is ever consulted. */
export const HOUR_MS = 3_600_000;

export function hourStart(epochMs: number): number {
  return Math.floor(epochMs / HOUR_MS) * HOUR_MS;
}

export function hourEnd(epochMs: number): number {
  return hourStart(epochMs) + HOUR_MS;
}

export function hourIso(hourMs: number): string {
  return new Date(hourMs).toISOString().replace('.000Z', 'Z');
}

/** Start of the UTC calendar month that contains `epochMs`. */
export function monthStart(epochMs: number): number {
  const d = new Date(epochMs);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** An elapsed time for people: `2h 5m`, `4m 10s`, `12s`. */
export function formatElapsed(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
