/**
 * The windowing processor: consumes the usage topic, validates each event, pre-aggregates the batch per
 * (hour, customer, dimension) in memory, and applies it to Redis in one atomic script together with the
 * partition checkpoint. Bad input goes to the failed-records topic before the checkpoint passes it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import type { Plan } from '../config/plan.ts';
import { type FailedRecord, headersToStrings } from '../dlq/envelope.ts';
import type { DlqPublisher } from '../dlq/publisher.ts';
import { isMeterlineError } from '../errors.ts';
import { EventDecoder } from '../ingest/decoder.ts';
import type { UsageEvent, ValidationContext } from '../ingest/event.ts';
import type { Logger } from '../log.ts';
import { aggregateField } from '../redis/keys.ts';
import { hourStart } from '../time/hours.ts';
import { PartitionRegistry } from './partition-registry.ts';
import type { AggregationOp, HourGroup, WindowStore } from './window-store.ts';

export interface ProcessorOptions {
  kafka: Kafka;
  store: WindowStore;
  dlq: DlqPublisher;
  plan: Plan;
  topic: string;
  groupId: string;
  maxFutureSkewMs: number;
  submitMarginMs: number;
  maxMessageBytes: number;
  logger: Logger;
  now?: () => number;
  /** JSON only when absent; pass one with an Avro decoder to read Confluent-framed Avro too. */
  decoder?: EventDecoder;
}

export interface ProcessorStats {
  events: number;
  applied: number;
  duplicates: number;
  carriedLate: number;
  failed: Record<string, number>;
  batches: number;
}

export class WindowingProcessor {
  readonly registry: PartitionRegistry;
  readonly stats: ProcessorStats = {
    events: 0,
    applied: 0,
    duplicates: 0,
    carriedLate: 0,
    failed: {},
    batches: 0,
  };
  readonly #o: ProcessorOptions;
  readonly #now: () => number;
  readonly #ops: Map<string, AggregationOp>;
  readonly #dimensions: Set<string>;
  #consumer: Consumer | undefined;
  readonly #decoder: EventDecoder;

  constructor(options: ProcessorOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#decoder = options.decoder ?? new EventDecoder();
    this.registry = new PartitionRegistry(options.topic, options.store, (partition) =>
      this.#logEnd(partition),
    );
    this.#ops = new Map(options.plan.dimensions.map((d) => [d.name, d.aggregation === 'max' ? 'm' : 's']));
    this.#dimensions = new Set(this.#ops.keys());
  }

  /** Aggregation op per dimension, for the commit stage. */
  get ops(): ReadonlyMap<string, AggregationOp> {
    return this.#ops;
  }

  async #logEnd(partition: number): Promise<bigint> {
    const admin = this.#o.kafka.admin();
    await admin.connect();
    try {
      const offsets = await admin.fetchTopicOffsets(this.#o.topic);
      return BigInt(offsets.find((o) => o.partition === partition)?.high ?? '0');
    } finally {
      await admin.disconnect();
    }
  }

  async start(): Promise<void> {
    const consumer = this.#o.kafka.consumer({
      groupId: this.#o.groupId,
      sessionTimeout: 30_000,
      heartbeatInterval: 3_000,
      maxBytesPerPartition: 1_048_576,
    });
    this.#consumer = consumer;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      const mine = payload.memberAssignment[this.#o.topic] ?? [];
      this.#o.logger.info({ partitions: mine, memberId: payload.memberId }, 'partitions assigned');
      this.registry.assign(mine);
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      this.#o.logger.error({ err: payload.error, restart: payload.restart }, 'processor consumer crashed');
    });
    await consumer.connect();
    await consumer.subscribe({ topic: this.#o.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
  }

  async stop(): Promise<void> {
    await this.#consumer?.disconnect();
    this.registry.clear();
  }

  async #eachBatch({
    batch,
    resolveOffset,
    commitOffsetsIfNecessary,
    heartbeat,
    isRunning,
    isStale,
  }: EachBatchPayload) {
    if (!batch.messages.length || !isRunning() || isStale()) return;
    const partition = batch.partition;
    const claim = this.registry.ensure(partition);
    if (!claim) {
      // Not ours (fenced, rebalance pending): leave the batch unresolved for the rightful owner.
      await sleep(500);
      return;
    }
    const owned = await claim;
    const ckpt = owned.checkpoint;
    const messages =
      ckpt === undefined ? batch.messages : batch.messages.filter((m) => BigInt(m.offset) > ckpt);
    const last = batch.messages[batch.messages.length - 1] as KafkaMessage;
    if (!messages.length) {
      owned.caughtUp = BigInt(batch.highWatermark) <= BigInt(last.offset) + 1n;
      resolveOffset(last.offset);
      return;
    }
    const first = messages[0] as KafkaMessage;
    if (ckpt !== undefined && BigInt(first.offset) > ckpt + 1n) {
      // The group offset ran ahead of Redis (state lost or restored from an old snapshot): go back to the
      // checkpoint rather than skip usage.
      this.#o.logger.warn(
        { partition, checkpoint: String(ckpt), first: first.offset },
        'rewinding to checkpoint',
      );
      this.#consumer?.seek({ topic: batch.topic, partition, offset: String(ckpt + 1n) });
      return;
    }

    const nowMs = this.#now();
    const ctx: ValidationContext = {
      nowMs,
      maxFutureSkewMs: this.#o.maxFutureSkewMs,
      submitMarginMs: this.#o.submitMarginMs,
      dimensions: this.#dimensions,
      maxMessageBytes: this.#o.maxMessageBytes,
    };
    const groups = new Map<
      number,
      Map<string, { op: AggregationOp; events: { id: string; micros: number }[] }>
    >();
    const failed: FailedRecord[] = [];
    for (const m of messages) {
      const decoded = this.#decoder.decode(m.value, ctx);
      const result = decoded instanceof Promise ? await decoded : decoded;
      if (result.ok) addToGroups(groups, result.event, this.#ops);
      else failed.push(ingestFailure(batch.topic, partition, m, result.reason, result.detail, nowMs));
    }

    await this.#o.dlq.publish(failed);
    await heartbeat();
    const hourGroups: HourGroup[] = [...groups].map(([hourMs, aggs]) => ({
      hourMs,
      aggregates: [...aggs].map(([field, a]) => ({ field, op: a.op, events: a.events })),
    }));
    try {
      const res = await this.#o.store.applyBatch(
        owned,
        owned.token,
        { first: first.offset, last: last.offset },
        hourGroups,
        hourStart(nowMs),
      );
      this.stats.applied += res.applied;
      this.stats.duplicates += res.duplicates;
      this.stats.carriedLate += res.carried;
      if (res.carried)
        this.#o.logger.info({ partition, carried: res.carried }, 'late events carried into the open hour');
    } catch (error) {
      if (isMeterlineError(error) && error.code === 'fenced') {
        this.#o.logger.warn({ partition }, 'fenced: another instance owns this partition now');
        this.registry.lose(partition);
        return;
      }
      if (!(isMeterlineError(error) && error.code === 'stale_batch')) throw error;
      this.#o.logger.info({ partition, first: first.offset }, 'batch already applied; skipping');
    }
    owned.checkpoint = BigInt(last.offset);
    owned.caughtUp = BigInt(batch.highWatermark) <= owned.checkpoint + 1n;
    this.stats.events += messages.length;
    this.stats.batches += 1;
    for (const f of failed) this.stats.failed[f.reason] = (this.stats.failed[f.reason] ?? 0) + 1;
    resolveOffset(last.offset);
    await commitOffsetsIfNecessary();
  }
}

function addToGroups(
  groups: Map<number, Map<string, { op: AggregationOp; events: { id: string; micros: number }[] }>>,
  e: UsageEvent,
  ops: ReadonlyMap<string, AggregationOp>,
): void {
  const hour = hourStart(e.timestampMs);
  let byField = groups.get(hour);
  if (!byField) {
    byField = new Map();
    groups.set(hour, byField);
  }
  const field = aggregateField(e.customer, e.dimension);
  let agg = byField.get(field);
  if (!agg) {
    agg = { op: ops.get(e.dimension) ?? 's', events: [] };
    byField.set(field, agg);
  }
  agg.events.push({ id: e.id, micros: e.micros });
}

function ingestFailure(
  topic: string,
  partition: number,
  m: KafkaMessage,
  reason: FailedRecord['reason'],
  detail: string,
  nowMs: number,
): FailedRecord {
  return {
    version: 1,
    stage: 'ingest',
    reason,
    detail,
    retriable: false,
    failedAt: new Date(nowMs).toISOString(),
    source: {
      topic,
      partition,
      offset: m.offset,
      key: m.key ? m.key.toString('utf8') : null,
      timestamp: new Date(Number(m.timestamp)).toISOString(),
      headers: headersToStrings(m.headers),
    },
    originalBase64: m.value ? m.value.toString('base64') : null,
  };
}
