/**
 * The loop of the periodic checks (backlog, gaps): a run now and one every interval on a timer that keeps
 * no process alive; a failed run goes to `onError` and the next one tries again.
 */
export interface RunningEvery {
  /** Clears the timer and waits for the latest run. */
  stop(): Promise<void>;
}

export function runEvery(
  intervalMs: number,
  run: () => Promise<unknown>,
  onError: (err: unknown) => void,
): RunningEvery {
  let running: Promise<unknown> | undefined;
  const tick = () => {
    running = run().catch(onError);
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await running;
    },
  };
}
