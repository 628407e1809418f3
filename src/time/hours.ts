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
