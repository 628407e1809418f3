/** What the bench's report and its phase modules share: number formatting and the goals table's rows. */

export const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '–';

/** One row of the goals table: reported, never a reason to fail the command. */
export interface Goal {
  goal: string;
  target: string;
  value: number | null;
  /** null: not measured in this run (phase skipped or failed). */
  pass: boolean | null;
}

/** A goal met when the value is at most `limit`. */
export function atMost(goal: string, limit: number, value: number | null, unit = ''): Goal {
  return { goal, target: `≤ ${limit}${unit}`, value, pass: value === null ? null : value <= limit };
}
