/**
 * Invariant 1 under fire: the processor (the real CLI, in a child process) is kill -9'd at random moments
 * mid-stream and restarted, at least five times; every window must come out exact.
 */
import { describe, it } from 'vitest';
import { CRASH_EVENTS, crashTest, KILLS } from '../support/crash-scenario.ts';

describe('crash test', () => {
  it(`counts ${CRASH_EVENTS} events exactly once through ${KILLS} kill -9s of the processor`, async () => {
    await crashTest('crash');
  }, 600_000);
});
