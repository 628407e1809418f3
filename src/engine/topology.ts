/**
 * A topology reads like its diagram: a source topic, a chain of processors, named sinks, state stores
 * per partition, and punctuators.
 */
import type { Processor, Punctuator, StateStore, TaskId } from './processor.ts';

export interface PunctuatorSpec {
  name: string;
  /** Wall-clock ms from the end of one run to the start of the next. */
  intervalMs: number;
  punctuator: Punctuator;
  /** Asked after each batch a task committed: true runs the punctuator now (it has work). */
  wakeAfterBatch?: WakeAfterBatch;
}

/** The partition of the batch, its checkpoint after it, and the clock at the batch. */
export type WakeAfterBatch = (partition: number, checkpoint: bigint | undefined, nowMs: number) => boolean;

export class Topology {
  source: { name: string; topic: string } | undefined;
  // biome-ignore lint/suspicious/noExplicitAny: processors in a chain take what the previous one forwards
  readonly processors: { name: string; create: () => Processor<any> }[] = [];
  readonly sinks = new Map<string, string>();
  readonly stores: { name: string; create: (task: TaskId) => StateStore }[] = [];
  readonly punctuators: PunctuatorSpec[] = [];

  addSource(name: string, topic: string): this {
    this.source = { name, topic };
    return this;
  }

  /** Appends a processor to the chain; each task gets its own instance. */
  // biome-ignore lint/suspicious/noExplicitAny: see above
  addProcessor(name: string, create: () => Processor<any>): this {
    this.processors.push({ name, create });
    return this;
  }

  addStateStore(name: string, create: (task: TaskId) => StateStore): this {
    this.stores.push({ name, create });
    return this;
  }

  addSink(name: string, topic: string): this {
    this.sinks.set(name, topic);
    return this;
  }

  /**
   * Runs `punctuator` at start and then `intervalMs` (wall clock) after each run ends, or sooner when it
   * says so, or when `wakeAfterBatch` says a committed batch gave it work.
   */
  schedule(name: string, intervalMs: number, punctuator: Punctuator, wakeAfterBatch?: WakeAfterBatch): this {
    this.punctuators.push({ name, intervalMs, punctuator, ...(wakeAfterBatch ? { wakeAfterBatch } : {}) });
    return this;
  }

  describe(): string {
    const chain = [
      `source ${this.source?.name} (${this.source?.topic})`,
      ...this.processors.map((p) => `processor ${p.name}`),
    ].join(' → ');
    const sinks = [...this.sinks].map(([name, topic]) => `sink ${name} (${topic})`).join(', ');
    const stores = this.stores.map((s) => s.name).join(', ');
    const punct = this.punctuators.map((p) => `${p.name} every ${p.intervalMs} ms`).join(', ');
    return `${chain}; ${sinks}; stores: ${stores}; punctuators: ${punct}`;
  }
}
