import type { StreamTask } from '../engine/stream-task.ts';
import { acceptanceDeadline, type MeteringApi } from '../metering/aws-window.ts';
import { metrics, reportOldestHour } from '../observability/metrics.ts';
import { HOURLY_WINDOWS, type HourlyWindowStore } from '../state/hourly-window-store.ts';

/**
 * The commit stage's gauges, after each punctuation: the oldest hour this instance still holds open or
 * unemitted (the processor's side of the deadline gauge), open windows, hours waiting for their emit, and
 * usage held for a tenant mapping.
 */
export async function reportCommitGauges(
  tasks: readonly StreamTask[],
  o: { api: MeteringApi; submitMarginMs: number },
  now: number,
): Promise<void> {
  let oldest: number | undefined;
  let oldestWaiting: number | undefined;
  const waiting: [partition: string, hours: number][] = [];
  const held: [partition: string, records: number][] = [];
  let oldestHeld: number | undefined;
  for (const task of tasks) {
    const store = task.getStateStore<HourlyWindowStore>(HOURLY_WINDOWS);
    const hour = await store.windows.oldestUnsubmittedHour(store.task);
    metrics.openWindows.set(
      { partition: String(store.task.partition) },
      await store.windows.openHourCount(store.task),
    );
    if (hour !== undefined && (oldest === undefined || hour < oldest)) oldest = hour;
    const pending = await store.windows.pendingEmits(store.task);
    waiting.push([String(store.task.partition), pending.length]);
    const heldHere = await store.windows.held.all(store.task);
    held.push([String(store.task.partition), heldHere.size]);
    for (const key of heldHere.keys()) {
      const h = Number(key.slice(0, key.indexOf('|')));
      if (oldestHeld === undefined || h < oldestHeld) oldestHeld = h;
    }
    for (const h of pending) if (oldestWaiting === undefined || h < oldestWaiting) oldestWaiting = h;
  }
  reportOldestHour('processor', oldest, o.api, now);
  // Reset and set with no await in between: partitions this instance no longer owns drop out (a stale
  // count would keep the alert firing), and a scrape never sees the owned ones missing.
  metrics.pendingEmitHours.reset();
  for (const [partition, hours] of waiting) metrics.pendingEmitHours.set({ partition }, hours);
  metrics.heldRecords.reset();
  for (const [partition, records] of held) metrics.heldRecords.set({ partition }, records);
  metrics.heldDeadLetterInSeconds.reset();
  if (oldestHeld !== undefined) {
    const at = acceptanceDeadline(o.api, oldestHeld) - o.submitMarginMs;
    metrics.heldDeadLetterInSeconds.set(Math.max(0, at - now) / 1000);
  }
  metrics.oldestPendingEmitHourAgeSeconds.set(
    oldestWaiting === undefined ? 0 : Math.max(0, now - oldestWaiting) / 1000,
  );
}
