import { describe, expect, it } from 'vitest';
import { PunctuationSchedule } from '../../../src/engine/punctuation.ts';
import { capturedLogger, deferred } from './engine-support.ts';

/** Yields to the event loop until `done` holds (the runs under test are all immediate). */
async function waitRuns(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setImmediate(resolve));
}

describe('PunctuationSchedule', () => {
  it('runs a punctuator at once and again after each run, never two runs at a time', async () => {
    const schedule = new PunctuationSchedule(capturedLogger().logger);
    let running = 0;
    let overlapped = false;
    let runs = 0;
    const third = deferred();
    schedule.every('beat', 1, async () => {
      running += 1;
      if (running > 1) overlapped = true;
      await Promise.resolve();
      running -= 1;
      if (++runs === 3) third.resolve();
    });
    await third.promise;
    await schedule.stop();
    expect(runs).toBeGreaterThanOrEqual(3);
    expect(overlapped).toBe(false);
  });

  it('runs again as soon as a run asks for it, before the interval', async () => {
    const schedule = new PunctuationSchedule(capturedLogger().logger);
    let runs = 0;
    const second = deferred();
    // An interval no test outlives: the second run can only come from the delay the first one returned.
    schedule.every('commit-stage', 3_600_000, async () => {
      runs += 1;
      if (runs === 2) second.resolve();
      return runs === 1 ? 1 : undefined;
    });
    await second.promise;
    await schedule.stop();
    expect(runs).toBe(2);
  });

  it('never waits longer than the interval, whatever a run asks for', async () => {
    const schedule = new PunctuationSchedule(capturedLogger().logger);
    let runs = 0;
    const second = deferred();
    schedule.every('commit-stage', 1, async () => {
      runs += 1;
      if (runs === 2) second.resolve();
      return 3_600_000;
    });
    await second.promise;
    await schedule.stop();
    expect(runs).toBe(2);
  });

  it('wake runs a punctuator now, or once more right after the run under way', async () => {
    const schedule = new PunctuationSchedule(capturedLogger().logger);
    const first = deferred();
    const release = deferred();
    const third = deferred();
    let runs = 0;
    schedule.every('commit-stage', 3_600_000, async () => {
      runs += 1;
      if (runs === 1) {
        first.resolve();
        await release.promise;
      }
      if (runs === 3) third.resolve();
    });
    await first.promise;
    // During the first run: one more run right after it (two wakes, not two more runs).
    schedule.wake('commit-stage');
    schedule.wake('commit-stage');
    release.resolve();
    await waitRuns(() => runs >= 2);
    // Between runs: at once, not an interval later.
    schedule.wake('commit-stage');
    await third.promise;
    await schedule.stop();
    expect(runs).toBe(3);
  });

  it('logs a failed run with the punctuator name and runs it again on the next tick', async () => {
    const { logger, lines } = capturedLogger();
    const schedule = new PunctuationSchedule(logger);
    let runs = 0;
    const second = deferred();
    schedule.every('commit-stage', 1, async () => {
      runs += 1;
      if (runs === 1) throw new Error('Redis went away');
      second.resolve();
    });
    await second.promise;
    await schedule.stop();
    const failed = lines().filter((l) => l.msg === 'punctuation failed; next tick retries');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ punctuator: 'commit-stage', err: { message: 'Redis went away' } });
  });

  it('stop waits for the run under way, and nothing runs after it', async () => {
    const schedule = new PunctuationSchedule(capturedLogger().logger);
    const started = deferred();
    const release = deferred();
    const order: string[] = [];
    let runs = 0;
    schedule.every('slow', 1, async () => {
      runs += 1;
      started.resolve();
      await release.promise;
      order.push('run ended');
    });
    await started.promise;
    const stopped = schedule.stop().then(() => order.push('stopped'));
    expect(schedule.stopped).toBe(true);
    release.resolve();
    await stopped;
    expect(order).toEqual(['run ended', 'stopped']);
    expect(runs).toBe(1);
  });
});
