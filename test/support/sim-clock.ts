/**
 * A simulated clock for tests where hours must pass: it runs at real speed from where it was last set,
 * and only ever moves forward. Passed as `now` to the pipeline and the emulator alike.
 */
export function simulatedClock(startMs: number): { now: () => number; setClock: (ms: number) => void } {
  let base = startMs;
  let setAt = Date.now();
  const now = () => base + (Date.now() - setAt);
  return {
    now,
    /** Moves the clock to `ms`, or leaves it where it is if it is already past that. */
    setClock: (ms: number) => {
      base = Math.max(ms, now());
      setAt = Date.now();
    },
  };
}
