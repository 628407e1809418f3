/** `--from` / `--to` of the reconcile commands: an ISO date or time, or a duration ago (`48h`, `7d`). */
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../config/duration.ts';

export function parseInstant(value: string, nowMs = Date.now()): number {
  const ago = parseDuration(value);
  if (ago !== undefined) return nowMs - ago;
  // A date or time with a zone (or a bare date, which ISO reads as UTC midnight).
  if (/^\d{4}-\d{2}-\d{2}$/.test(value) || /(Z|[+-]\d{2}:?\d{2})$/.test(value)) {
    const ms = Date.parse(value);
    if (Number.isFinite(ms)) return ms;
  }
  throw new InvalidArgumentError(
    'use an ISO date or time with a zone (2026-12-01, 2026-12-01T10:00Z) or a duration ago (48h, 7d)',
  );
}

/** For commander: keeps the text, checked now (so a bad value is a usage error before any connection). */
export function instantArg(value: string): string {
  parseInstant(value);
  return value;
}
