/**
 * One partition's task: its processor instances and state stores. A batch runs through the chain, then
 * sinks are flushed (dead letters become durable first), then the stores commit with the batch's last
 * offset. Batch processing and punctuation on the task never interleave.
 */
import type { Producer } from 'kafkajs';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  boundedLinks,
  headerTraceparent,
  inSpan,
  ROOT_CONTEXT,
  SpanKind,
  tracingActive,
} from '../observability/tracing.ts';
import type {
  Processor,
  ProcessorContext,
  RestorePoint,
  SinkMessage,
  SourceRecord,
  StateStore,
  StoreHealth,
  TaskId,
} from './processor.ts';
import type { Topology } from './topology.ts';

/** Links per batch span: enough to follow a sample of events back to their producers. */
const MAX_BATCH_LINKS = 32;

export class StreamTask {
  readonly id: TaskId;
  // biome-ignore lint/suspicious/noExplicitAny: each processor takes what the previous one forwards
  readonly #processors: Processor<any>[];
  readonly #stores = new Map<string, StateStore>();
  readonly #sinks: ReadonlyMap<string, string>;
  readonly #producer: Producer;
  #restore: RestorePoint = {};
  #queue: Promise<unknown> = Promise.resolve();

  constructor(id: TaskId, topology: Topology, producer: Producer) {
    this.id = id;
    this.#processors = topology.processors.map((p) => p.create());
    for (const s of topology.stores) this.#stores.set(s.name, s.create(id));
    this.#sinks = topology.sinks;
    this.#producer = producer;
  }

  get restorePoint(): RestorePoint {
    return this.#restore;
  }

  /** The store applied input up to `offset` already (its reply was lost): resume after it. */
  advanceTo(offset: bigint): void {
    if (this.#restore.checkpoint === undefined || offset > this.#restore.checkpoint) {
      this.#restore.checkpoint = offset;
    }
  }

  getStateStore<S extends StateStore>(name: string): S {
    const store = this.#stores.get(name);
    if (!store) throw new Error(`no state store "${name}" in task ${this.id.topic}/${this.id.partition}`);
    return store as S;
  }

  /**
   * Opens the stores (claiming the partition) and initializes the processors. `processedUntil`: input
   * below it was processed by this instance before (a store that lost its state replays it).
   */
  async open(processedUntil?: bigint): Promise<RestorePoint> {
    const points = await Promise.all([...this.#stores.values()].map((s) => s.open(this.id, processedUntil)));
    // With several stores, resume from the earliest point any of them needs.
    this.#restore = points.reduce<RestorePoint>((acc, p) => {
      if (p.seekTo !== undefined && (acc.seekTo === undefined || BigInt(p.seekTo) < BigInt(acc.seekTo))) {
        acc.seekTo = p.seekTo;
      }
      if (p.replayUntil !== undefined) acc.replayUntil = p.replayUntil;
      if (p.holdUntil !== undefined) acc.holdUntil = p.holdUntil;
      if (p.checkpoint !== undefined) acc.checkpoint = p.checkpoint;
      return acc;
    }, {});
    for (const p of this.#processors) {
      await p.init?.({ task: this.id, getStateStore: (name) => this.getStateStore(name) });
    }
    return this.#restore;
  }

  /**
   * Moves the checkpoint over input that holds no records (an aborted transaction, a lone marker), so a
   * caught-up partition shows no lag and counts as idle. Only when that input follows the checkpoint
   * directly (`first` = checkpoint + 1): after a seek or across a gap, nothing is assumed.
   */
  skipThrough(first: string, last: string, nowMs: number): Promise<void> {
    return this.exclusive(async () => {
      const ckpt = this.#restore.checkpoint;
      if (this.#restore.seekTo !== undefined || ckpt === undefined) return;
      if (BigInt(first) !== ckpt + 1n || BigInt(last) <= ckpt) return;
      try {
        for (const store of this.#stores.values()) await store.commit({ after: ckpt, last, nowMs });
        this.#restore.checkpoint = BigInt(last);
      } catch (error) {
        for (const store of this.#stores.values()) store.abort();
        throw error;
      }
    });
  }

  /** The worst health any store reports, read between batches (never mid-commit). */
  verify(): Promise<StoreHealth> {
    return this.exclusive(() => this.verifyHeld());
  }

  /** The same, for a caller that already runs exclusively on this task (a punctuator). */
  async verifyHeld(): Promise<StoreHealth> {
    const order: StoreHealth[] = ['ok', 'fenced', 'behind', 'lost'];
    let worst: StoreHealth = 'ok';
    for (const store of this.#stores.values()) {
      const health = (await store.verify?.(this.#restore.checkpoint)) ?? 'ok';
      if (order.indexOf(health) > order.indexOf(worst)) worst = health;
    }
    return worst;
  }

  /** Runs `fn` exclusively on this task (batches and punctuations take turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Processes records (all above the checkpoint) and commits them. With tracing on, the batch is one
   * consumer span linked to (a bounded number of) the producers' spans: a batch has many parents.
   */
  processBatch(records: SourceRecord[], nowMs: number, through?: string): Promise<void> {
    if (!tracingActive()) return this.exclusive(() => this.#process(records, nowMs, through));
    return this.exclusive(() =>
      inSpan(
        `process ${this.id.topic}`,
        {
          kind: SpanKind.CONSUMER,
          links: boundedLinks(
            records.map((r) => headerTraceparent(r.headers)),
            MAX_BATCH_LINKS,
          ),
          attributes: {
            [ATTR.messagingSystem]: 'kafka',
            [ATTR.messagingOperationType]: 'process',
            [ATTR.messagingOperationName]: 'process',
            [ATTR.messagingDestination]: this.id.topic,
            [ATTR.messagingPartition]: String(this.id.partition),
            [ATTR.messagingBatchCount]: records.length,
            [ATTR.messagingKafkaOffset]: Number(records[0]?.offset ?? -1),
          },
        },
        ROOT_CONTEXT,
        () => this.#process(records, nowMs, through),
      ),
    );
  }

  /** `through`: the offset the batch covers (its last record, or a transaction marker after it). */
  async #process(records: SourceRecord[], nowMs: number, through?: string): Promise<void> {
    const outbox = new Map<string, SinkMessage[]>();
    const replayUntil = this.#restore.replayUntil;
    const state = { record: records[0] as SourceRecord, replaying: false };
    const chain = this.#chainContexts(state, nowMs, outbox);
    const head = this.#processors[0];
    try {
      for (const record of records) {
        state.record = record;
        state.replaying = replayUntil !== undefined && BigInt(record.offset) < replayUntil;
        const done = head?.process(record, chain[0] as ProcessorContext);
        if (done instanceof Promise) await done;
      }
      for (const [sink, messages] of outbox) {
        await this.#producer.send({ topic: this.#sinks.get(sink) as string, acks: -1, messages });
      }
      const lastRecord = records[records.length - 1]?.offset as string;
      const last = through !== undefined && BigInt(through) > BigInt(lastRecord) ? through : lastRecord;
      const after = this.#restore.checkpoint;
      for (const store of this.#stores.values()) await store.commit({ after, last, nowMs });
      this.#restore.checkpoint = BigInt(last);
    } catch (error) {
      for (const store of this.#stores.values()) store.abort();
      throw error;
    }
  }

  /**
   * One context per processor for the whole batch (not per record: this is the hot path). `record` and
   * `replaying` read the batch's current position; processors must not keep the context past process().
   */
  #chainContexts(
    state: { record: SourceRecord; replaying: boolean },
    nowMs: number,
    outbox: Map<string, SinkMessage[]>,
  ): ProcessorContext[] {
    const contexts: ProcessorContext[] = [];
    const send = (sink: string, message: SinkMessage) => {
      if (!this.#sinks.has(sink)) throw new Error(`no sink "${sink}"`);
      const list = outbox.get(sink);
      if (list) list.push(message);
      else outbox.set(sink, [message]);
    };
    this.#processors.forEach((_, i) => {
      const next = this.#processors[i + 1];
      contexts.push({
        task: this.id,
        nowMs,
        get record() {
          return state.record;
        },
        get replaying() {
          return state.replaying;
        },
        forward: next ? (value) => next.process(value, contexts[i + 1] as ProcessorContext) : () => undefined,
        send,
        getStateStore: (name) => this.getStateStore(name),
      });
    });
    return contexts;
  }

  async close(): Promise<void> {
    for (const p of this.#processors) await p.close?.();
    for (const s of this.#stores.values()) await s.close();
  }
}
