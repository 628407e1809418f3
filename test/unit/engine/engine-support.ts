/**
 * What the engine's unit tests run a task with, without a broker or Redis: a state store kept in memory
 * that honours the StateStore contract (commit only from the task's checkpoint), and a producer that keeps
 * what the sinks sent.
 */
import { Writable } from 'node:stream';
import type { Producer, ProducerRecord } from 'kafkajs';
import type {
  RestorePoint,
  SourceRecord,
  StateStore,
  StoreHealth,
  TaskId,
} from '../../../src/engine/processor.ts';
import { createLogger, type Logger } from '../../../src/log.ts';

export class MemoryStore implements StateStore {
  readonly name: string;
  /** What open() answers. */
  restorePoint: RestorePoint;
  health: StoreHealth = 'ok';
  checkpoint: bigint | undefined;
  opened: { task: TaskId; processedUntil: bigint | undefined } | undefined;
  readonly commits: { after: bigint | undefined; last: string }[] = [];
  aborts = 0;
  closed = false;
  /** Verify calls, with the checkpoint the task asked about. */
  readonly verified: (bigint | undefined)[] = [];

  constructor(name: string, restorePoint: RestorePoint = {}) {
    this.name = name;
    this.restorePoint = restorePoint;
    this.checkpoint = restorePoint.checkpoint;
  }

  async open(task: TaskId, processedUntil?: bigint): Promise<RestorePoint> {
    this.opened = { task, processedUntil };
    return { ...this.restorePoint };
  }

  async commit(batch: { after: bigint | undefined; last: string; nowMs: number }): Promise<void> {
    if (batch.after !== this.checkpoint) {
      throw new Error(`store ${this.name} is at ${this.checkpoint}, the task at ${batch.after}`);
    }
    this.commits.push({ after: batch.after, last: batch.last });
    this.checkpoint = BigInt(batch.last);
  }

  async verify(after: bigint | undefined): Promise<StoreHealth> {
    this.verified.push(after);
    return this.health;
  }

  abort(): void {
    this.aborts += 1;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Keeps every send; `failNext` makes the next one throw, as a broker that refused it. */
export function recordingProducer(): { producer: Producer; sent: ProducerRecord[]; failNext: () => void } {
  const sent: ProducerRecord[] = [];
  let fail = false;
  const producer = {
    async send(record: ProducerRecord) {
      if (fail) {
        fail = false;
        throw new Error('the broker refused the send');
      }
      sent.push(record);
      return [];
    },
  } as unknown as Producer;
  return { producer, sent, failNext: () => (fail = true) };
}

export function record(offset: number, value: string): SourceRecord {
  return { offset: String(offset), key: null, value: Buffer.from(value), timestamp: '0' };
}

/** A logger whose lines are kept. */
export function capturedLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    logger: createLogger('engine-test', 'info', stream),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** A promise with its resolver, to hold a step until the test lets it go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
