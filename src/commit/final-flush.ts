/**
 * The final flush. After unsubscribe-pending AWS takes a buyer's last records for about an hour, too soon
 * for its open hour to wait for the partition's schedule. While AWS still takes them, each tick closes
 * the open hours up to now of the subscription that is ending, for it alone (a cut: HourFinalizer.cut, one
 * script), and emits them; its later usage of those hours is carried to the next one, cut the same way
 * while there is time. A registered buyer is cut per product (leaving A, it keeps B's hour on schedule);
 * a customers-file tenant, whose status names no product, is cut whole.
 */
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import type { Logger } from '../log.ts';
import { cutScope } from '../redis/keys.ts';
import type { HourlyWindowStore } from '../state/hourly-window-store.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import type { HourEmitter } from './hour-emitter.ts';
import type { HourFinalizer } from './hour-finalizer.ts';

/** A subscription that is ending: one product of a tenant, or the whole tenant (no product named). */
export interface Ending {
  customer: string;
  productCode?: string;
  /** When AWS reported unsubscribe-pending. */
  atMs: number;
}

export class FinalFlush {
  readonly #finalizer: HourFinalizer;
  readonly #emitter: HourEmitter;
  readonly #logger: Logger;
  readonly #now: () => number;
  /** `scope|hour` early closes already made (or found made) by this process. */
  #done = new Set<string>();

  constructor(finalizer: HourFinalizer, emitter: HourEmitter, logger: Logger, now: () => number) {
    this.#finalizer = finalizer;
    this.#emitter = emitter;
    this.#logger = logger;
    this.#now = now;
  }

  /**
   * Cuts and emits the open hours of this task's subscriptions in `ending` (by cut scope). Returns false
   * when a cut could not be emitted (it is tried again next tick).
   */
  async run(
    store: HourlyWindowStore,
    ending: ReadonlyMap<string, Ending>,
    partitions: number,
    zeroFields: readonly { field: string; customer: string; productCode: string; fromMs: number }[],
    /** The checkpoint the task applied: a Redis behind it cuts nothing. */
    held?: bigint,
  ): Promise<boolean> {
    if (!ending.size) return true;
    const task = store.task;
    const now = this.#now();
    const open = (await store.windows.hoursEndingBy(task, hourStart(now) + HOUR_MS)).filter(
      (h) => h <= hourStart(now),
    );
    const hours = [...new Set([...open, hourStart(now)])].sort((a, b) => a - b);
    for (const [scope, { customer, productCode, atMs }] of ending) {
      if (partitionOfCustomer(customer, partitions) !== task.partition) continue;
      if (now > atMs + HOUR_MS) continue;
      for (const hour of hours) {
        if (hour > hourStart(atMs) + HOUR_MS) continue;
        const memo = `${scope}|${hour}`;
        if (this.#done.has(memo)) continue;
        const zero = zeroFields
          .filter(
            (z) =>
              z.customer === customer &&
              (productCode === undefined || z.productCode === productCode) &&
              z.fromMs <= hour,
          )
          .map((z) => z.field);
        const res = await this.#finalizer.cut(
          store.windows,
          task,
          store.token,
          hour,
          { customer, ...(productCode === undefined ? {} : { productCode }) },
          zero,
          undefined,
          held,
        );
        if (this.#done.size > 10_000) this.#done.clear();
        this.#done.add(memo);
        if (res === 'cut') {
          await store.noteCut(hour);
          this.#logger.info(
            { partition: task.partition, customer, productCode, hour: hourIso(hour) },
            'subscription ending: its hour is closed now, for it alone',
          );
          if (!(await this.#emitter.emitCut(store, hour, cutScope(customer, productCode)))) return false;
        }
      }
    }
    return true;
  }
}
