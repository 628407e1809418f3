/**
 * The metering models: how one closed hour of one customer and dimension becomes the integer quantity
 * AWS bills. Pure functions over exact integers (BigInt micro-units), so the rules are property-tested
 * on their own; the commit stage stores the returned state in the same atomic step as the frozen record.
 *
 * - hourly: the hour's sum or peak, converted and rounded. A sum's fractional remainder is carried to the
 *   next hour, so over any span the billed total is the measured total within one unit.
 * - monthly: only increases of the calendar month's (UTC) high-water mark are billed; reset each month.
 * - contract: only cumulative usage in the contract period above the entitlement is billed, hour by
 *   hour, minus what was already billed; reset each period. The entitlement may change within a period
 *   (GetEntitlements refreshed): each hour bills against the one in force when it closes, and an increase
 *   bills nothing until usage passes it again (what was billed is never taken back).
 *
 * AWS takes at most 2^31-1 per record: anything above is held back and billed in the next hours.
 */
import type { Dimension, Rounding } from '../config/plan.ts';

export const MAX_AWS_QUANTITY = 2_147_483_647;
const CAP = BigInt(MAX_AWS_QUANTITY);

/** What a customer and dimension carry from one hour to the next. Absent fields are zero. */
export interface ModelState {
  /** Sum carry, micro-units: the fraction (or capped excess) not billed yet. May be negative after ceil. */
  carry?: bigint;
  /** Whole units due but held back by the AWS cap (or left over when a period closed). */
  held?: bigint;
  /** The month ('2026-11') or contract period start the fields below belong to. */
  period?: string;
  /** monthly: the period's peak; contract: its cumulative usage. Micro-units. */
  level?: bigint;
  /** Units billed in the period so far. */
  billed?: bigint;
  /**
   * contract: the entitlement (micro-units) the period was last billed against, so a period that ends
   * settles with its own entitlement rather than the next period's (an expired entitlement has none).
   */
  allowance?: bigint;
}

export interface HourInput {
  hourMs: number;
  dimension: Pick<Dimension, 'model' | 'aggregation' | 'rounding' | 'unitMicros' | 'zeroRecords'>;
  /** The hour's sum or peak in micro-units; undefined when the hour had no usage. */
  usage: bigint | undefined;
  state: ModelState;
  /** contract model: the period holding this hour and the entitlement for it, in micro-units. */
  contract?: { period: string; entitlementMicros: bigint };
}

export interface HourOutcome {
  /** The record's quantity, or undefined when no record is due this hour. */
  quantity: number | undefined;
  state: ModelState;
  /** Units held back because AWS's cap was hit (alert on it). */
  heldBack: bigint;
}

export function divRound(n: bigint, d: bigint, mode: Rounding): bigint {
  const q = n / d;
  const r = n % d;
  if (r === 0n) return q;
  switch (mode) {
    case 'floor':
      return n < 0n ? q - 1n : q;
    case 'ceil':
      return n > 0n ? q + 1n : q;
    case 'round':
      // Half up, in exact integers: floor((2n + d) / 2d).
      return divRound(2n * n + d, 2n * d, 'floor');
  }
}

export function monthOf(hourMs: number): string {
  return new Date(hourMs).toISOString().slice(0, 7);
}

export function applyModel(input: HourInput): HourOutcome {
  const { dimension: d, state } = input;
  if (d.model === 'hourly' && d.aggregation === 'sum') return hourlySum(input);
  if (d.model === 'hourly') {
    const due =
      (input.usage === undefined ? 0n : divRound(input.usage, d.unitMicros, d.rounding)) + (state.held ?? 0n);
    return emit(due, { ...state }, input.usage !== undefined || d.zeroRecords || due > 0n);
  }
  const period =
    d.model === 'monthly' ? monthOf(input.hourMs) : (input.contract?.period ?? monthOf(input.hourMs));
  let s: ModelState = { ...state };
  if (s.period !== period) {
    // A new period: whatever the old one still owed stays due; its level and billing start over.
    const owed = s.period === undefined ? 0n : target(s, d, s.allowance ?? 0n) - (s.billed ?? 0n);
    s = { held: (s.held ?? 0n) + (owed > 0n ? owed : 0n), period, level: 0n, billed: 0n };
  }
  const usage = input.usage ?? 0n;
  s.level =
    d.model === 'monthly' ? (usage > (s.level ?? 0n) ? usage : (s.level ?? 0n)) : (s.level ?? 0n) + usage;
  const entitlement = input.contract?.entitlementMicros ?? 0n;
  if (d.model === 'contract') s.allowance = entitlement;
  // Never below zero: after an entitlement grows, the period may already have billed more than is due now.
  const earned = target(s, d, entitlement) - (s.billed ?? 0n);
  const fresh = earned > 0n ? earned : 0n;
  const held = s.held ?? 0n;
  const due = fresh + held;
  const quantity = due > CAP ? CAP : due;
  // Held units go first, so the period's own billing stays exact.
  const fromHeld = quantity < held ? quantity : held;
  s.held = held - fromHeld;
  s.billed = (s.billed ?? 0n) + quantity - fromHeld;
  return {
    quantity: due > 0n || d.zeroRecords ? Number(quantity) : undefined,
    state: tidy(s),
    heldBack: due - quantity,
  };
}

/** Units the period has earned so far: the converted peak (monthly) or overage (contract). */
function target(s: ModelState, d: HourInput['dimension'], entitlementMicros: bigint): bigint {
  const level = s.level ?? 0n;
  const over = d.model === 'contract' ? level - entitlementMicros : level;
  return over > 0n ? divRound(over, d.unitMicros, d.rounding) : 0n;
}

function hourlySum(input: HourInput): HourOutcome {
  const { dimension: d, state } = input;
  const total = (input.usage ?? 0n) + (state.carry ?? 0n);
  let q = divRound(total, d.unitMicros, d.rounding);
  if (q < 0n) q = 0n;
  const quantity = q > CAP ? CAP : q;
  const carry = total - quantity * d.unitMicros;
  const due = input.usage !== undefined || d.zeroRecords || quantity > 0n;
  return {
    quantity: due ? Number(quantity) : undefined,
    state: tidy({ ...state, carry }),
    heldBack: q - quantity,
  };
}

function emit(due: bigint, s: ModelState, recordDue: boolean): HourOutcome {
  const quantity = due > CAP ? CAP : due;
  s.held = due - quantity;
  return { quantity: recordDue ? Number(quantity) : undefined, state: tidy(s), heldBack: due - quantity };
}

/** Drops zero fields, so an idle customer's state is empty and can be deleted. */
function tidy(s: ModelState): ModelState {
  const out: ModelState = {};
  if (s.carry) out.carry = s.carry;
  if (s.held) out.held = s.held;
  if (s.period !== undefined && (s.level || s.billed)) {
    out.period = s.period;
    if (s.level) out.level = s.level;
    if (s.billed) out.billed = s.billed;
    if (s.allowance) out.allowance = s.allowance;
  }
  return out;
}

export function encodeState(s: ModelState): string {
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(s)) o[k] = String(v);
  return JSON.stringify(o);
}

export function decodeState(text: string | null | undefined): ModelState {
  if (!text) return {};
  // The skeleton stored a bare carry in micro-units.
  if (/^-?\d+$/.test(text)) return tidy({ carry: BigInt(text) });
  const o = JSON.parse(text) as Record<string, string>;
  const s: ModelState = {};
  if (o.carry) s.carry = BigInt(o.carry);
  if (o.held) s.held = BigInt(o.held);
  if (o.period) s.period = o.period;
  if (o.level) s.level = BigInt(o.level);
  if (o.billed) s.billed = BigInt(o.billed);
  if (o.allowance) s.allowance = BigInt(o.allowance);
  return s;
}

export function isEmptyState(s: ModelState): boolean {
  return Object.keys(s).length === 0;
}

/** Start (ISO) of the contract period holding an hour: periods of whole months or years from `start`. */
export function contractPeriod(
  contract: { start: string; period: 'month' | 'year' },
  hourMs: number,
): string {
  const s = new Date(contract.start);
  const h = new Date(hourMs);
  const step = contract.period === 'year' ? 12 : 1;
  const months = h.getUTCFullYear() * 12 + h.getUTCMonth() - (s.getUTCFullYear() * 12 + s.getUTCMonth());
  let n = Math.floor(months / step) * step;
  if (addMonths(s, n) > hourMs) n -= step;
  return new Date(addMonths(s, n)).toISOString();
}

/** `d` moved by `n` calendar months, the day clamped to the month's length (Jan 31 → Feb 28). */
function addMonths(d: Date, n: number): number {
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + n;
  const last = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  return Date.UTC(
    y,
    m,
    Math.min(d.getUTCDate(), last),
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
  );
}
