import { describe, expect, it } from 'vitest';
import {
  closeBoundary,
  hoursToClose,
  nextCloseAt,
  type PartitionProgress,
} from '../../../src/commit/close-boundary.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';

const NOW = Date.parse('2026-11-27T17:20:00Z');
const o = { graceMs: 60_000, maxDelayMs: 3 * 3_600_000, maxOutOfOrdernessMs: 30_000, idleTimeoutMs: 120_000 };
const part = (p: Partial<PartitionProgress> & { partition: number }): PartitionProgress => ({
  maxEventTime: undefined,
  activeAt: undefined,
  checkpoint: undefined,
  logEnd: 0n,
  ...p,
});
const active = (partition: number, maxEventTime: number) =>
  part({ partition, maxEventTime, activeAt: NOW - 1_000, checkpoint: 9n, logEnd: 10n });

describe('when an hour may close', () => {
  it('follows the slowest active partition, minus out-of-orderness and grace', () => {
    const b = closeBoundary([active(0, NOW - 5_000), active(1, NOW - 600_000)], NOW, o);
    expect(b).toBe(NOW - 600_000 - 30_000 - 60_000);
  });

  it('does not let an idle partition hold the others back', () => {
    const idle = part({
      partition: 2,
      maxEventTime: NOW - 3_000_000,
      activeAt: NOW - 121_000,
      checkpoint: 4n,
      logEnd: 5n,
    });
    expect(closeBoundary([active(0, NOW - 5_000), idle], NOW, o)).toBe(NOW - 5_000 - 90_000);
  });

  it('follows the wall clock when every partition is idle', () => {
    const idle = part({
      partition: 0,
      maxEventTime: NOW - 3_000_000,
      activeAt: NOW - 500_000,
      checkpoint: 4n,
      logEnd: 5n,
    });
    expect(closeBoundary([idle, part({ partition: 1 })], NOW, o)).toBe(NOW - 90_000);
  });

  it('is held back by a partition with unread input, however long it was quiet', () => {
    const backlog = part({
      partition: 1,
      maxEventTime: NOW - 2_000_000,
      activeAt: NOW - 900_000,
      checkpoint: 4n,
      logEnd: 90n,
    });
    expect(closeBoundary([active(0, NOW), backlog], NOW, o)).toBe(NOW - 2_000_000 - 90_000);
  });

  it('closes only by max delay while a backlog of unknown event time is unread', () => {
    const unread = part({ partition: 1, logEnd: 1_000n });
    expect(closeBoundary([active(0, NOW), unread], NOW, o)).toBe(NOW - o.maxDelayMs);
  });
});

describe('nextCloseAt: the first instant the boundary reaches the next hour end', () => {
  const end = Date.parse('2026-11-27T17:00:00Z');
  const idleSince = (partition: number, at: number) =>
    part({ partition, maxEventTime: end - 1, activeAt: at, checkpoint: 4n, logEnd: 5n });

  it('is end + out-of-orderness + grace when every partition is idle', () => {
    const parts = [idleSince(0, NOW - 500_000), idleSince(1, NOW - 600_000)];
    const at = nextCloseAt(parts, NOW, o);
    expect(at).toBe(Date.parse('2026-11-27T18:00:00Z') + o.maxOutOfOrdernessMs + o.graceMs);
    expect(closeBoundary(parts, at as number, o)).toBe(Date.parse('2026-11-27T18:00:00Z'));
    expect(closeBoundary(parts, (at as number) - 1, o)).toBeLessThan(Date.parse('2026-11-27T18:00:00Z'));
  });

  it('is the moment the partition holding the watermark back goes idle, when the wall clock is past by then', () => {
    // 18:01:40: the hour 17:00 is past grace and out-of-orderness; partition 1 stays active until 18:02:40.
    const now = Date.parse('2026-11-27T18:01:40Z');
    const lastEvent = Date.parse('2026-11-27T18:00:00Z') - 1;
    const parts = [0, 1].map((partition) =>
      part({
        partition,
        maxEventTime: lastEvent,
        activeAt: now - 60_000 * (1 + partition),
        checkpoint: 4n,
        logEnd: 5n,
      }),
    );
    expect(closeBoundary(parts, now, o)).toBeLessThan(Date.parse('2026-11-27T18:00:00Z'));
    const at = nextCloseAt(parts, now, o) as number;
    expect(at).toBe(now - 60_000 + o.idleTimeoutMs + 1);
    expect(closeBoundary(parts, now, o)).toBe(lastEvent - o.maxOutOfOrdernessMs - o.graceMs);
    expect(closeBoundary(parts, at, o)).toBeGreaterThanOrEqual(Date.parse('2026-11-27T18:00:00Z'));
    expect(closeBoundary(parts, at - 1, o)).toBeLessThan(Date.parse('2026-11-27T18:00:00Z'));
  });

  it('falls back on the max-delay bound while an unread backlog holds the watermark', () => {
    const unread = part({ partition: 1, logEnd: 1_000n });
    const b = closeBoundary([active(0, NOW), unread], NOW, o);
    const next = Date.parse('2026-11-27T15:00:00Z');
    expect(b).toBeLessThan(next);
    expect(nextCloseAt([active(0, NOW), unread], NOW, o)).toBe(next + o.maxDelayMs);
  });
});

describe('hoursToClose', () => {
  const H = Date.parse('2026-11-27T10:00:00Z');
  const h = (n: number) => H + n * HOUR_MS;

  it('closes only the hours with usage when nothing asks for a sequence', () => {
    expect(
      hoursToClose({
        withUsage: [h(0), h(3)],
        sequential: false,
        closedThrough: undefined,
        boundary: h(5),
        oldestAcceptable: h(-20),
      }),
    ).toEqual([h(0), h(3)]);
  });

  it('closes every hour after the last closed one up to the boundary, for zero records', () => {
    // Boundary 14:30: 13:00 is the last hour that has ended.
    expect(
      hoursToClose({
        withUsage: [h(3)],
        sequential: true,
        closedThrough: h(0),
        boundary: h(4) + HOUR_MS / 2,
        oldestAcceptable: h(-20),
      }),
    ).toEqual([h(1), h(2), h(3)]);
  });

  it('starts a first sequence at the oldest hour with usage, and skips hours AWS can no longer take', () => {
    expect(
      hoursToClose({
        withUsage: [h(1)],
        sequential: true,
        closedThrough: undefined,
        boundary: h(4),
        oldestAcceptable: h(-20),
      }),
    ).toEqual([h(1), h(2), h(3)]);
    expect(
      hoursToClose({
        withUsage: [],
        sequential: true,
        closedThrough: h(-30),
        boundary: h(0),
        oldestAcceptable: h(-3),
      }),
    ).toEqual([h(-3), h(-2), h(-1)]);
  });
});
