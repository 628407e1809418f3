/**
 * The submission backlog as Kafka sees it, whoever is (or is not) running: for each partition of the
 * submission topic, the records past the worker group's committed offset, how long the oldest of them has
 * waited (its Kafka timestamp) and how long until its AWS deadline (the record's own `deadline`). Also the
 * failed-records topic's size, to alert on a DLQ that keeps growing. Run by processors and workers alike,
 * so a stopped worker fleet still raises the backlog alert.
 *
 * The oldest waiting record of a lagging partition is read by a consumer group of the check's own, started
 * at the worker group's offsets (nothing is ever committed for the worker group).
 */
import type { Admin, Kafka } from 'kafkajs';
import type { Logger } from '../log.ts';
import { parseSubmissionRecord } from '../metering/submission-record.ts';
import { metrics } from '../observability/metrics.ts';
import { type RunningEvery, runEvery } from './run-every.ts';

export interface BacklogOptions {
  kafka: Kafka;
  submissionsTopic: string;
  failedTopic: string;
  workerGroup: string;
  logger: Logger;
  /** @defaultValue 1 minute */
  intervalMs?: number;
  /** How long a check waits for the oldest records. @defaultValue 10 seconds */
  readTimeoutMs?: number;
  now?: () => number;
}

export interface Backlog {
  records: number;
  /** Seconds the oldest waiting record has waited; 0 when none. */
  oldestAgeSeconds: number;
  /** Seconds until the oldest waiting record's deadline (negative: missed); undefined when none. */
  deadlineSeconds: number | undefined;
  failedTopicMessages: number;
}

export class BacklogMonitor {
  readonly #o: Required<Omit<BacklogOptions, 'now'>> & { now: () => number };
  #admin: Admin | undefined;
  #checks: RunningEvery | undefined;

  constructor(o: BacklogOptions) {
    this.#o = { intervalMs: 60_000, readTimeoutMs: 10_000, now: Date.now, ...o };
    if (this.#o.intervalMs <= 0) throw new Error('intervalMs must be greater than 0');
  }

  async start(): Promise<void> {
    this.#admin = this.#o.kafka.admin();
    await this.#admin.connect();
    this.#checks = runEvery(
      this.#o.intervalMs,
      () => this.check(),
      (err) => this.#o.logger.warn({ err }, 'submission backlog check failed'),
    );
  }

  async stop(): Promise<void> {
    await this.#checks?.stop();
    await this.#admin?.disconnect().catch(() => {});
  }

  async check(): Promise<Backlog> {
    const admin = this.#admin;
    if (!admin) throw new Error('start() first');
    const { submissionsTopic: topic, failedTopic, workerGroup } = this.#o;
    const topics = new Set(await admin.listTopics());
    let failedTopicMessages = 0;
    if (topics.has(failedTopic)) {
      for (const o of await admin.fetchTopicOffsets(failedTopic))
        failedTopicMessages += Number(BigInt(o.high) - BigInt(o.low));
    }
    const lagging: { partition: number; offset: string; lag: number }[] = [];
    if (topics.has(topic)) {
      const ends = await admin.fetchTopicOffsets(topic);
      const [committed] = await admin.fetchOffsets({ groupId: workerGroup, topics: [topic] });
      for (const e of ends) {
        const c = committed?.partitions.find((p) => p.partition === e.partition)?.offset;
        // No committed offset: the worker never ran; it would start from the beginning of what is kept.
        // An offset below the log start (retention deleted what it pointed at) waits from the log start.
        const from =
          c === undefined || Number(c) < 0 || BigInt(c) < BigInt(e.low) ? BigInt(e.low) : BigInt(c);
        const lag = BigInt(e.high) - from;
        if (lag > 0n) lagging.push({ partition: e.partition, offset: from.toString(), lag: Number(lag) });
      }
    }
    const now = this.#o.now();
    const oldest = lagging.length ? await this.#oldest(topic, lagging) : [];
    const ages = oldest.map((m) => (now - m.timestamp) / 1000);
    const deadlines = oldest.flatMap((m) =>
      m.deadlineMs === undefined ? [] : [(m.deadlineMs - now) / 1000],
    );
    const backlog: Backlog = {
      records: lagging.reduce((s, l) => s + l.lag, 0),
      oldestAgeSeconds: ages.length ? Math.max(0, ...ages) : 0,
      deadlineSeconds: deadlines.length ? Math.min(...deadlines) : undefined,
      failedTopicMessages,
    };
    metrics.submissionBacklogRecords.set(backlog.records);
    metrics.submissionBacklogAgeSeconds.set(backlog.oldestAgeSeconds);
    if (backlog.deadlineSeconds === undefined) metrics.submissionBacklogDeadlineSeconds.reset();
    else metrics.submissionBacklogDeadlineSeconds.set(backlog.deadlineSeconds);
    metrics.failedTopicMessages.set(failedTopicMessages);
    return backlog;
  }

  /**
   * The first waiting message of each lagging partition (those read within the timeout): a consumer group
   * of its own per check, its offsets set to the worker group's before it joins, deleted after.
   */
  async #oldest(
    topic: string,
    lagging: readonly { partition: number; offset: string }[],
  ): Promise<{ timestamp: number; deadlineMs: number | undefined }[]> {
    const admin = this.#admin as Admin;
    const groupId = `meterline-backlog-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    const ends = await admin.fetchTopicOffsets(topic);
    await admin.setOffsets({
      groupId,
      topic,
      partitions: ends.map((e) => ({
        partition: e.partition,
        offset: lagging.find((l) => l.partition === e.partition)?.offset ?? e.high,
      })),
    });
    const found = new Map<number, { timestamp: number; deadlineMs: number | undefined }>();
    const consumer = this.#o.kafka.consumer({ groupId, maxWaitTimeInMs: 500 });
    let timer: NodeJS.Timeout | undefined;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic });
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(resolve, this.#o.readTimeoutMs);
        consumer
          .run({
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              const first = batch.messages[0];
              if (!first || found.has(batch.partition)) return;
              const record = parseSubmissionRecord(first.value);
              found.set(batch.partition, {
                timestamp: Number(first.timestamp),
                deadlineMs: record ? Date.parse(record.deadline) : undefined,
              });
              if (found.size >= lagging.length) resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      clearTimeout(timer);
      await consumer.disconnect().catch(() => {});
      await admin.deleteGroups([groupId]).catch(() => {});
    }
    return [...found.values()];
  }
}
