/**
 * When hours may close: the event-time watermark over the topic's partitions and the wall-clock bound.
 * Pure functions, so the rules are testable on their own (test/unit/commit/close-boundary.test.ts).
 *
 * The watermark is the lowest event time over the topic's active partitions, minus the allowed
 * out-of-orderness. A partition without valid events for `idleTimeout` stops holding it back; when
 * every partition is idle, the watermark follows the wall clock.
 */

import type { PartitionTime } from '../state/window-types.ts';
import { HOUR_MS, hourStart } from '../time/hours.ts';

export interface EventTimeOptions {
  graceMs: number;
  maxDelayMs: number;
  maxOutOfOrdernessMs: number;
  idleTimeoutMs: number;
}

export interface PartitionProgress extends PartitionTime {
  /** The partition's log end offset (the next offset to be written). */
  logEnd: bigint;
}

/**
 * The latest hour end that may close now. Pure, so the rule is testable on its own.
 *
 * A partition holds the watermark back while it is active: it had valid events within the idle timeout,
 * or it still has unread input (a backlog, e.g. after an outage). A backlog whose event time is unknown
 * holds everything back; only the max-delay bound closes hours then.
 */
export function closeBoundary(
  partitions: readonly PartitionProgress[],
  nowMs: number,
  o: EventTimeOptions,
): number {
  const active = partitions.filter(
    (p) =>
      (p.checkpoint ?? -1n) + 1n < p.logEnd ||
      (p.maxEventTime !== undefined && p.activeAt !== undefined && nowMs - p.activeAt <= o.idleTimeoutMs),
  );
  const watermark = active.length
    ? Math.min(...active.map((p) => p.maxEventTime ?? Number.NEGATIVE_INFINITY)) - o.maxOutOfOrdernessMs
    : nowMs - o.maxOutOfOrdernessMs;
  return Math.max(watermark - o.graceMs, nowMs - o.maxDelayMs);
}

/**
 * The first instant after `nowMs` at which `closeBoundary` reaches the next hour end, if nothing but the
 * wall clock changes (no new input): the commit stage looks again then rather than a whole interval later.
 * The boundary moves with the clock in three ways only: every partition idle (it follows the clock), the
 * max-delay bound, and a partition going idle (it stops holding the watermark back); the first crossing is
 * at one of those instants. Undefined when none of them gets there (an active partition's new input will).
 */
export function nextCloseAt(
  partitions: readonly PartitionProgress[],
  nowMs: number,
  o: EventTimeOptions,
): number | undefined {
  const next = hourStart(closeBoundary(partitions, nowMs, o)) + HOUR_MS;
  const candidates = [next + o.maxOutOfOrdernessMs + o.graceMs, next + o.maxDelayMs];
  for (const p of partitions) {
    if (p.activeAt !== undefined) candidates.push(p.activeAt + o.idleTimeoutMs + 1);
  }
  return candidates
    .filter((t) => t > nowMs)
    .sort((a, b) => a - b)
    .find((t) => closeBoundary(partitions, t, o) >= next);
}

/** The hours to close now, oldest first: hours with usage, and every hour in sequence when needed. */
export function hoursToClose(input: {
  withUsage: readonly number[];
  /** Close every hour, with or without usage (zero records, or units owed to the next hour). */
  sequential: boolean;
  closedThrough: number | undefined;
  boundary: number;
  /** The oldest hour AWS can still take: older empty hours are not worth a record. */
  oldestAcceptable: number;
}): number[] {
  const hours = new Set(input.withUsage);
  if (input.sequential) {
    const last = hourStart(input.boundary) - HOUR_MS;
    let h = input.closedThrough !== undefined ? input.closedThrough + HOUR_MS : (input.withUsage[0] ?? last);
    h = Math.max(h, input.oldestAcceptable);
    for (; h <= last; h += HOUR_MS) hours.add(h);
  }
  return [...hours].sort((a, b) => a - b);
}
