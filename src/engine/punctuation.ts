/**
 * Runs punctuators on the wall clock: each at once, then `intervalMs` after each run ends, or sooner when
 * the run says when it has work next (runs of one punctuator never overlap, and a slow run delays the next
 * rather than piling up), or at once when woken (`wake`). A failed run is logged and the next tick tries
 * again. `stop` clears the timers and waits for the runs under way.
 */
import type { Logger } from '../log.ts';

/** A punctuator's next timer, whether a run is under way, and whether a wake came during it. */
interface Loop {
  timer?: NodeJS.Timeout;
  running: boolean;
  again: boolean;
  run: () => void;
}

export class PunctuationSchedule {
  readonly #logger: Logger;
  readonly #timers = new Set<NodeJS.Timeout>();
  #running: Promise<unknown>[] = [];
  /** Per punctuator: its next timer, whether a run is under way, and whether a wake came during it. */
  readonly #loops = new Map<
    string,
    { timer?: NodeJS.Timeout; running: boolean; again: boolean; run: () => void }
  >();
  #stopped = false;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /**
   * Runs `fn` now and then `intervalMs` after each run ends, until stop(); a failure waits for the next.
   * A run may return the ms until it has work next: the next run comes then if that is sooner.
   */
  every(name: string, intervalMs: number, fn: () => Promise<number | undefined> | Promise<void>): void {
    const state: Loop = { running: false, again: false, run: () => {} };
    state.run = () => {
      if (this.#stopped) return;
      state.running = true;
      state.again = false;
      const run = (fn() as Promise<unknown>).catch((err) => {
        this.#logger.error({ err, punctuator: name }, 'punctuation failed; next tick retries');
        return undefined;
      });
      this.#running.push(run);
      run.then((soon) => {
        this.#running = this.#running.filter((x) => x !== run);
        state.running = false;
        const wait = state.again
          ? 0
          : typeof soon === 'number'
            ? Math.max(0, Math.min(intervalMs, soon))
            : intervalMs;
        if (!this.#stopped) state.timer = this.#later(state.run, wait);
      });
    };
    this.#loops.set(name, state);
    state.timer = this.#later(state.run, 0);
  }

  /**
   * Runs a punctuator now rather than at its next tick (something it waits for happened), or once more
   * right after the run under way; wakes that come together make one run.
   */
  wake(name: string): void {
    const state = this.#loops.get(name);
    if (!state || this.#stopped) return;
    if (state.running) {
      state.again = true;
      return;
    }
    if (state.timer) {
      clearTimeout(state.timer);
      this.#timers.delete(state.timer);
    }
    state.timer = this.#later(state.run, 0);
  }

  #later(fn: () => void, ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    await Promise.allSettled(this.#running);
  }
}
