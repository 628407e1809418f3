/**
 * Runs a topology on a kafkajs consumer group: one task per assigned partition, batches through the
 * task, offsets restored from the state stores (not from the group), and punctuators on schedule.
 * Group offsets are committed after each store commit, for lag monitoring and for detecting state loss.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import { isMeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { metrics } from '../observability/metrics.ts';
import type { SourceRecord } from './processor.ts';
import { PunctuationSchedule } from './punctuation.ts';
import { StreamTask } from './stream-task.ts';
import type { Topology } from './topology.ts';

export interface StreamsAppOptions {
  kafka: Kafka;
  producer: Producer;
  groupId: string;
  topology: Topology;
  logger: Logger;
  now?: () => number;
  /** Partitions processed at once by this instance. */
  concurrency?: number;
  /** A member silent this long is dropped from the group; a rebalance waits twice that for members. */
  sessionTimeoutMs?: number;
  /**
   * How often each task's stores are checked for a state loss, without waiting for traffic.
   * @defaultValue 5 s
   */
  stateCheckIntervalMs?: number;
  /** Test seam: runs before a task commits a batch (to pause an instance mid-batch). */
  beforeCommit?: (task: StreamTask) => Promise<void>;
}

export class StreamsApp {
  /**
   * Batches refused because another instance had taken the partition, state losses (or a Redis behind the
   * task) recovered, batches left for redelivery, and batches Redis had applied before (a lost reply).
   */
  readonly stats = { fencedBatches: 0, stateLosses: 0, redelivered: 0, replyLost: 0 };
  readonly #o: StreamsAppOptions;
  readonly #now: () => number;
  readonly #topic: string;
  #consumer: Consumer | undefined;
  #tasks = new Map<number, Promise<StreamTask>>();
  #assigned = new Set<number>();
  /** Partitions lost to a newer owner: not reclaimed until the group assigns them again. */
  #fencedOut = new Set<number>();
  readonly #schedule: PunctuationSchedule;

  constructor(options: StreamsAppOptions) {
    if (!options.topology.source) throw new Error('the topology has no source');
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#topic = options.topology.source.topic;
    this.#schedule = new PunctuationSchedule(options.logger);
  }

  /** The tasks this instance runs now. */
  async tasks(): Promise<StreamTask[]> {
    const settled = await Promise.allSettled(this.#tasks.values());
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }

  async start(): Promise<void> {
    const consumer = this.#o.kafka.consumer({
      groupId: this.#o.groupId,
      sessionTimeout: this.#o.sessionTimeoutMs ?? 30_000,
      rebalanceTimeout: 2 * (this.#o.sessionTimeoutMs ?? 30_000),
      heartbeatInterval: Math.min(3_000, Math.floor((this.#o.sessionTimeoutMs ?? 30_000) / 3)),
      // A fetch's records all stay in memory until its last batch is through (kafkajs decodes a whole fetch,
      // about 5 times its bytes in objects): 8 MB bounds that whatever the backlog. 2 MB per partition keeps
      // script calls large: their Redis cost follows the aggregates they touch more than their events.
      maxBytesPerPartition: 2_097_152,
      maxBytes: 8_388_608,
      // Aborted transactions are never counted: committed data only (also kafkajs's default).
      readUncommitted: false,
    });
    this.#consumer = consumer;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      const mine = payload.memberAssignment[this.#topic] ?? [];
      this.#o.logger.info({ partitions: mine, memberId: payload.memberId }, 'partitions assigned');
      this.#assign(mine);
      // A new owner looks at its partitions at once (hours closable or frozen but not emitted while they
      // moved), not a whole interval later: one more tick per rebalance.
      if (mine.length) for (const p of this.#o.topology.punctuators) this.#schedule.wake(p.name);
    });
    // kafkajs resolves a fetch that holds no records (an aborted transaction, a lone marker) by itself,
    // without calling eachBatch: move the task's checkpoint over it, so a caught-up partition shows no lag
    // and counts as idle (the watermark would wait for it otherwise).
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.batchSize !== 0 || payload.topic !== this.#topic || this.#schedule.stopped) return;
      const first = payload.firstOffset;
      if (first === null) return;
      const partition = payload.partition;
      this.#tasks
        .get(partition)
        ?.then((task) => task.skipThrough(first, payload.lastOffset, this.#now()))
        .catch((err: unknown) =>
          this.#o.logger.debug({ err, partition }, 'could not move the checkpoint over an empty fetch'),
        );
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      this.#o.logger.error({ err: payload.error, restart: payload.restart }, 'consumer crashed');
    });
    await consumer.connect();
    await consumer.subscribe({ topic: this.#topic, fromBeginning: true });
    await consumer.run({
      autoCommit: true,
      // Group offsets only serve lag monitoring and loss detection (Redis holds the checkpoint): commit
      // them every few seconds, not after every batch.
      autoCommitInterval: 5_000,
      eachBatchAutoResolve: false,
      // Tasks are independent: while one waits on Redis, another decodes.
      partitionsConsumedConcurrently: this.#o.concurrency ?? 3,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
    for (const p of this.#o.topology.punctuators) {
      this.#schedule.every(p.name, p.intervalMs, () => p.punctuator(this.#now()));
    }
    // A partition whose state Redis lost (or rolled back) while no usage arrives would otherwise wait for
    // its next record: check every task's stores on a beat of their own.
    this.#schedule.every('state-check', this.#o.stateCheckIntervalMs ?? 5_000, () => this.#checkStates());
  }

  /** Re-claims every task whose store lost its state or fell behind, and seeks it at once. */
  async #checkStates(): Promise<void> {
    for (const [partition, pending] of this.#tasks) {
      const task = await pending.catch(() => undefined);
      if (!task || this.#tasks.get(partition) !== pending) continue;
      const health = await task.verify();
      // 'fenced': a newer owner has it, and the group's rebalance will take it from this instance.
      if (health === 'ok' || health === 'fenced') continue;
      this.stats.stateLosses += 1;
      metrics.stateRecoveries.inc({ kind: health });
      this.#o.logger.error(
        { partition, health, checkpoint: task.restorePoint.checkpoint?.toString() ?? null },
        health === 'lost'
          ? 'Redis lost this partition state (found without traffic); recovering from Kafka'
          : 'Redis is behind this task (found without traffic): re-claiming and replaying from its checkpoint',
      );
      await this.#reopen(partition, pending, task, true);
    }
  }

  async stop(): Promise<void> {
    await this.#schedule.stop();
    await this.#consumer?.disconnect();
    for (const task of await this.tasks()) await task.close().catch(() => undefined);
    this.#tasks = new Map();
  }

  /** A new assignment: every task is opened afresh, which bumps each partition's fencing token. */
  #assign(partitions: readonly number[]): void {
    const previous = this.#tasks;
    this.#tasks = new Map();
    this.#assigned = new Set(partitions);
    this.#fencedOut = new Set();
    for (const [, task] of previous) task.then((t) => t.close()).catch(() => undefined);
    for (const partition of partitions) this.#openTask(partition);
  }

  /** `processedUntil`: input below this offset was processed before (the store may have lost it). */
  #openTask(partition: number, processedUntil?: bigint): Promise<StreamTask> {
    const task = new StreamTask({ topic: this.#topic, partition }, this.#o.topology, this.#o.producer);
    const opened = task.open(processedUntil).then(() => task);
    opened.catch((err) => {
      this.#o.logger.error({ err, partition }, 'could not open task; retrying on the next batch');
      if (this.#tasks.get(partition) === opened) this.#tasks.delete(partition);
    });
    this.#tasks.set(partition, opened);
    return opened;
  }

  async #eachBatch({ batch, resolveOffset, commitOffsetsIfNecessary, isRunning, isStale }: EachBatchPayload) {
    if (!batch.messages.length || !isRunning() || isStale()) return;
    const partition = batch.partition;
    let pending = this.#tasks.get(partition);
    if (!pending && this.#assignedHere(partition)) pending = this.#openTask(partition);
    if (!pending) {
      // Not ours (fenced out, rebalance under way): leave the batch to the rightful owner.
      await sleep(500);
      return;
    }
    const task = await pending;
    const restore = task.restorePoint;
    if (restore.seekTo !== undefined) {
      const to = restore.seekTo;
      restore.seekTo = undefined;
      this.#o.logger.warn({ partition, offset: to }, 'seeking to the restore point');
      this.#consumer?.seek({ topic: batch.topic, partition, offset: to });
      return;
    }
    // The batch's last offset, past any transaction markers after its last record: stored as the
    // checkpoint, so a caught-up partition shows no lag and counts as idle.
    const through = batch.lastOffset();
    // Since the task's seek, the consumer reads on from where it resolved: the fetch is continuous with the
    // checkpoint whatever the offsets (transaction markers, aborted records and compaction leave gaps).
    // Redis's checkpoint is checked by the batch script; when it is ahead, only what follows it is applied.
    for (;;) {
      const ckpt = restore.checkpoint;
      const records: SourceRecord[] =
        ckpt === undefined || BigInt(batch.messages[0]?.offset ?? '0') > ckpt
          ? batch.messages
          : batch.messages.filter((m) => BigInt(m.offset) > ckpt);
      if (!records.length) break;
      try {
        if (this.#o.beforeCommit) await this.#o.beforeCommit(task);
        await task.processBatch(records, this.#now(), through);
        break;
      } catch (error) {
        if (!isMeterlineError(error)) throw error;
        if (error.code === 'stale_batch') {
          // The store says how far it applied (its error carries its checkpoint).
          const applied = BigInt(String(error.context.checkpoint));
          if (ckpt !== undefined && applied <= ckpt) throw error;
          this.stats.replyLost += 1;
          metrics.stateRecoveries.inc({ kind: 'reply_lost' });
          this.#o.logger.warn(
            { partition, checkpoint: applied.toString(), task: ckpt?.toString() ?? null },
            "Redis had applied input past the task's checkpoint (a lost reply): applying only what follows",
          );
          task.advanceTo(applied);
          continue;
        }
        if (error.code === 'fenced') {
          this.stats.fencedBatches += 1;
          this.#o.logger.warn({ partition }, 'fenced: another instance owns this partition now');
          if (this.#tasks.get(partition) === pending) this.#tasks.delete(partition);
          this.#fencedOut.add(partition);
          return;
        }
        if (error.code === 'state_lost' || error.code === 'store_behind') {
          this.stats.stateLosses += 1;
          metrics.stateRecoveries.inc({ kind: error.code === 'state_lost' ? 'lost' : 'behind' });
          this.#o.logger.error(
            { partition, code: error.code, ...error.context },
            error.code === 'state_lost'
              ? 'Redis lost this partition state; recovering from Kafka'
              : 'Redis is behind this task (failover or restore): re-claiming and replaying from its checkpoint',
          );
          await this.#reopen(partition, pending, task);
          return;
        }
        if (error.retriable) {
          this.stats.redelivered += 1;
          this.#o.logger.warn({ partition, code: error.code }, 'batch not committed; it will be redelivered');
          return;
        }
        throw error;
      }
    }
    resolveOffset(through);
    for (const p of this.#o.topology.punctuators) {
      if (p.wakeAfterBatch?.(partition, task.restorePoint.checkpoint, this.#now()))
        this.#schedule.wake(p.name);
    }
    await commitOffsetsIfNecessary();
  }

  /**
   * Re-claims a partition whose Redis state was lost or fell behind; its task seeks where the store says,
   * on its next batch, or at once (`seekNow`) when the partition may have no traffic to bring one.
   */
  async #reopen(
    partition: number,
    pending: Promise<StreamTask>,
    task: StreamTask,
    seekNow = false,
  ): Promise<void> {
    // What this task applied, so a store that lost everything knows input was processed before.
    const progress = task.restorePoint.checkpoint;
    await task.close().catch(() => undefined);
    if (this.#tasks.get(partition) !== pending) return;
    const opened = this.#openTask(partition, progress === undefined ? undefined : progress + 1n);
    if (!seekNow) return;
    const reopened = await opened.catch(() => undefined);
    const to = reopened?.restorePoint.seekTo;
    if (!reopened || to === undefined || this.#tasks.get(partition) !== opened) return;
    reopened.restorePoint.seekTo = undefined;
    this.#o.logger.warn({ partition, offset: to }, 'seeking to the restore point');
    this.#consumer?.seek({ topic: this.#topic, partition, offset: to });
  }

  #assignedHere(partition: number): boolean {
    return !this.#fencedOut.has(partition) && this.#assigned.has(partition);
  }
}
