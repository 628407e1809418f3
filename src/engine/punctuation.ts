/**
 * Runs punctuators on the wall clock: each at once, then `intervalMs` after each run ends (runs of one
 * punctuator never overlap, and a slow run delays the next rather than piling up). A failed run is logged
 * and the next tick tries again. `stop` clears the timers and waits for the runs under way.
 */
import type { Logger } from '../log.ts';

export class PunctuationSchedule {
  readonly #logger: Logger;
  #timers: NodeJS.Timeout[] = [];
  #running: Promise<unknown>[] = [];
  #stopped = false;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Runs `fn` now and then `intervalMs` after each run ends, until stop(); a failure waits for the next. */
  every(name: string, intervalMs: number, fn: () => Promise<void>): void {
    const loop = () => {
      if (this.#stopped) return;
      const run = fn().catch((err) =>
        this.#logger.error({ err, punctuator: name }, 'punctuation failed; next tick retries'),
      );
      this.#running.push(run);
      run.finally(() => {
        this.#running = this.#running.filter((x) => x !== run);
        if (!this.#stopped) this.#timers.push(setTimeout(loop, intervalMs));
      });
    };
    this.#timers.push(setTimeout(loop, 0));
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
