/**
 * One partition's task: its processor instances and state stores. A batch runs through the chain, then
 * sinks are flushed (dead letters become durable first), then the stores commit with the batch's last
 * offset. Batch processing and punctuation on the task never interleave.
 */
import type { Producer } from 'kafkajs';
import type {
  Processor,
  ProcessorContext,
  RestorePoint,
  SinkMessage,
  SourceRecord,
  StateStore,
  TaskId,
} from './processor.ts';
import type { Topology } from './topology.ts';

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

  getStateStore<S extends StateStore>(name: string): S {
    const store = this.#stores.get(name);
    if (!store) throw new Error(`no state store "${name}" in task ${this.id.topic}/${this.id.partition}`);
    return store as S;
  }

  /** Opens the stores (claiming the partition) and initializes the processors. */
  async open(): Promise<RestorePoint> {
    const points = await Promise.all([...this.#stores.values()].map((s) => s.open(this.id)));
    // With several stores, resume from the earliest point any of them needs.
    this.#restore = points.reduce<RestorePoint>((acc, p) => {
      if (p.seekTo !== undefined && (acc.seekTo === undefined || BigInt(p.seekTo) < BigInt(acc.seekTo))) {
        acc.seekTo = p.seekTo;
      }
      if (p.replayUntil !== undefined) acc.replayUntil = p.replayUntil;
      if (p.checkpoint !== undefined) acc.checkpoint = p.checkpoint;
      return acc;
    }, {});
    for (const p of this.#processors) {
      await p.init?.({ task: this.id, getStateStore: (name) => this.getStateStore(name) });
    }
    return this.#restore;
  }

  /** Runs `fn` exclusively on this task (batches and punctuations take turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Processes records (all above the checkpoint) and commits them. */
  processBatch(records: SourceRecord[], nowMs: number): Promise<void> {
    return this.exclusive(async () => {
      const outbox = new Map<string, SinkMessage[]>();
      const replayUntil = this.#restore.replayUntil;
      try {
        for (const record of records) {
          const context: ProcessorContext = {
            task: this.id,
            record,
            nowMs,
            replaying: replayUntil !== undefined && BigInt(record.offset) < replayUntil,
            forward: () => undefined,
            send: (sink, message) => {
              if (!this.#sinks.has(sink)) throw new Error(`no sink "${sink}"`);
              const list = outbox.get(sink);
              if (list) list.push(message);
              else outbox.set(sink, [message]);
            },
            getStateStore: (name) => this.getStateStore(name),
          };
          await this.#runChain(0, record, context);
        }
        for (const [sink, messages] of outbox) {
          await this.#producer.send({ topic: this.#sinks.get(sink) as string, acks: -1, messages });
        }
        const first = records[0]?.offset as string;
        const last = records[records.length - 1]?.offset as string;
        for (const store of this.#stores.values()) await store.commit({ first, last, nowMs });
        this.#restore.checkpoint = BigInt(last);
      } catch (error) {
        for (const store of this.#stores.values()) store.abort();
        throw error;
      }
    });
  }

  async #runChain(index: number, value: unknown, context: ProcessorContext): Promise<void> {
    const processor = this.#processors[index];
    if (!processor) return;
    const next = this.#processors[index + 1];
    const ctx: ProcessorContext = next
      ? { ...context, forward: (v) => this.#runChain(index + 1, v, ctx) }
      : context;
    await processor.process(value, ctx);
  }

  async close(): Promise<void> {
    for (const p of this.#processors) await p.close?.();
    for (const s of this.#stores.values()) await s.close();
  }
}
