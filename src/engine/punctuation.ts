/**
 * Runs punctuators on the wall clock: each at once, then `intervalMs` after each run ends, or sooner when
 * the run says when it has work next (runs of one punctuator never overlap, and a slow run delays the next
 * rather than piling up). A failed run is logged
 * and the next tick tries again. `stop` clears the timers and waits for the runs under way.
 */
import type { Logger } from '../log.ts';

export class PunctuationSchedule {
  readonly #logger: Logger;
  readonly #timers = new Set<NodeJS.Timeout>();
  #running: Promise<unknown>[] = [];
  #stopped = false;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /**
   * Runs `fn` now and then `intervalMs` after each run ends, until stop(); a failure waits for the next.
   * A run may return the ms until it has work next: the next run comes then if that is sooner.
   */
  every(name: string, intervalMs: number, fn: () => Promise<number | undefined> | Promise<void>): void {
    const loop = () => {
      if (this.#stopped) return;
      const run = fn().catch((err) => {
        this.#logger.error({ err, punctuator: name }, 'punctuation failed; next tick retries');
        return undefined;
      });
      this.#running.push(run);
      run.then((soon) => {
        this.#running = this.#running.filter((x) => x !== run);
        const wait = typeof soon === 'number' ? Math.max(0, Math.min(intervalMs, soon)) : intervalMs;
        if (!this.#stopped) this.#later(loop, wait);
      });
    };
    this.#later(loop, 0);
  }

  #later(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
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
