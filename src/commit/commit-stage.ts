/**
 * The commit stage: a wall-clock punctuator over the partitions this instance owns. It finalizes every
 * hour whose end + grace has passed on a partition that is caught up, or whose end + maxDelay has passed
 * in any case (freeze in Redis, then emit, then mark emitted). It re-emits hours that were frozen but not
 * yet acknowledged by Kafka before a crash: same id, same quantity.
 */
import type { Producer } from 'kafkajs';
import type { Plan } from '../config/plan.ts';
import { isMeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { MeteringApi } from '../submit/aws-window.ts';
import { hourIso } from '../time/hours.ts';
import type { OwnedPartition, PartitionRegistry } from '../window/partition-registry.ts';
import type { AggregationOp, WindowStore } from '../window/window-store.ts';
import { makeSubmissionRecord, type SubmissionRecord } from './submission-record.ts';

export interface CommitStageOptions {
  store: WindowStore;
  registry: PartitionRegistry;
  producer: Producer;
  topic: string;
  plan: Plan;
  ops: ReadonlyMap<string, AggregationOp>;
  api: MeteringApi;
  graceMs: number;
  /** Wall-clock bound: an hour closes at end + maxDelay even while its partition still has a backlog. */
  maxDelayMs: number;
  intervalMs: number;
  logger: Logger;
  now?: () => number;
}

export class CommitStage {
  readonly stats = { hoursFinalized: 0, recordsEmitted: 0, reEmitted: 0 };
  readonly #o: CommitStageOptions;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(options: CommitStageOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  start(): void {
    this.#stopped = false;
    const loop = () => {
      if (this.#stopped) return;
      this.#running = this.punctuate()
        .catch((err) => this.#o.logger.error({ err }, 'commit stage punctuation failed; retrying next tick'))
        .finally(() => {
          if (!this.#stopped) this.#timer = setTimeout(loop, this.#o.intervalMs);
        });
    };
    this.#timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** One punctuation: emit what is frozen but unacknowledged, then close every due hour, oldest first. */
  async punctuate(): Promise<void> {
    for (const owned of await this.#o.registry.owned()) {
      try {
        for (const hour of await this.#o.store.pendingEmits(owned)) {
          this.stats.reEmitted += 1;
          await this.#finalizeAndEmit(owned, hour);
        }
        const now = this.#now();
        const closedBefore = now - (owned.caughtUp ? this.#o.graceMs : this.#o.maxDelayMs);
        for (const hour of await this.#o.store.hoursEndingBy(owned, closedBefore)) {
          await this.#finalizeAndEmit(owned, hour);
        }
      } catch (error) {
        if (isMeterlineError(error) && error.code === 'fenced') {
          this.#o.registry.lose(owned.partition);
          this.#o.logger.warn({ partition: owned.partition }, 'fenced during finalize; partition moved');
          continue;
        }
        throw error;
      }
    }
  }

  async #finalizeAndEmit(owned: OwnedPartition, hourMs: number): Promise<void> {
    const frozen = await this.#o.store.finalizeHour(owned, owned.token, hourMs, this.#o.ops);
    const finalizedAtMs = this.#now();
    const records: SubmissionRecord[] = frozen.map((f) =>
      makeSubmissionRecord({
        productCode: this.#o.plan.productCode,
        customer: f.customer,
        dimension: f.dimension,
        hourMs,
        quantity: f.quantity,
        api: this.#o.api,
        finalizedAtMs,
      }),
    );
    if (records.length) {
      await this.#o.producer.send({
        topic: this.#o.topic,
        acks: -1,
        messages: records.map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      });
    }
    await this.#o.store.markEmitted(owned, owned.token, hourMs);
    this.stats.hoursFinalized += 1;
    this.stats.recordsEmitted += records.length;
    this.#o.logger.info(
      { partition: owned.partition, hour: hourIso(hourMs), records: records.length },
      'hour finalized and emitted',
    );
  }
}
