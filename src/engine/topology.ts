/**
 * A topology reads like its diagram: a source topic, a chain of processors, named sinks, state stores
 * per partition, and punctuators.
 */
import type { Processor, PunctuationType, Punctuator, StateStore, TaskId } from './processor.ts';

export interface PunctuatorSpec {
  name: string;
  type: PunctuationType;
  intervalMs: number;
  punctuator: Punctuator;
}

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

  schedule(name: string, type: PunctuationType, intervalMs: number, punctuator: Punctuator): this {
    this.punctuators.push({ name, type, intervalMs, punctuator });
    return this;
  }

  describe(): string {
    const chain = [
      `source ${this.source?.name} (${this.source?.topic})`,
      ...this.processors.map((p) => `processor ${p.name}`),
    ].join(' → ');
    const sinks = [...this.sinks].map(([name, topic]) => `sink ${name} (${topic})`).join(', ');
    const stores = this.stores.map((s) => s.name).join(', ');
    const punct = this.punctuators.map((p) => `${p.name} every ${p.intervalMs} ms of ${p.type}`).join(', ');
    return `${chain}; ${sinks}; stores: ${stores}; punctuators: ${punct}`;
  }
}
