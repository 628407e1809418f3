import { describe, expect, it } from 'vitest';
import type { Processor, ProcessorContext } from '../../../src/engine/processor.ts';
import { StreamTask } from '../../../src/engine/stream-task.ts';
import { Topology } from '../../../src/engine/topology.ts';
import { deferred, MemoryStore, record, recordingProducer } from './engine-support.ts';

const id = { topic: 'usage-events', partition: 4 };

/** A topology of two processors: the first upper-cases and forwards, the second sends to a sink. */
function build(stores: MemoryStore[], seen: { value: string; replaying: boolean; offset: string }[] = []) {
  const upper: Processor<{ value: Buffer | null }> = {
    process: (r, ctx) => ctx.forward(String(r.value).toUpperCase()),
  };
  const emit: Processor<string> = {
    process: (value, ctx: ProcessorContext) => {
      seen.push({ value, replaying: ctx.replaying, offset: ctx.record.offset });
      if (value === 'BOOM') throw new Error('processor failed');
      if (value === 'NOWHERE') ctx.send('nowhere', { key: null, value });
      ctx.send('out', { key: null, value });
    },
  };
  const topology = new Topology()
    .addSource('in', id.topic)
    .addProcessor('upper', () => upper)
    .addProcessor('emit', () => emit)
    .addSink('out', 'outputs');
  for (const s of stores) topology.addStateStore(s.name, () => s);
  const { producer, sent, failNext } = recordingProducer();
  return { task: new StreamTask(id, topology, producer), sent, failNext, seen };
}

describe('StreamTask: restore points', () => {
  it('opens every store for its partition and resumes from the earliest point any of them needs', async () => {
    const a = new MemoryStore('a', { seekTo: '40', checkpoint: 39n });
    const b = new MemoryStore('b', { seekTo: '25', replayUntil: 60n, holdUntil: 70n });
    const { task } = build([a, b]);
    const point = await task.open(50n);
    expect(a.opened).toEqual({ task: id, processedUntil: 50n });
    expect(b.opened).toEqual({ task: id, processedUntil: 50n });
    expect(point).toEqual({ seekTo: '25', checkpoint: 39n, replayUntil: 60n, holdUntil: 70n });
    expect(task.restorePoint).toEqual(point);
  });

  it('advanceTo moves the checkpoint forward only (a lost reply that did land)', async () => {
    const { task } = build([new MemoryStore('s', { checkpoint: 10n })]);
    await task.open();
    task.advanceTo(15n);
    expect(task.restorePoint.checkpoint).toBe(15n);
    task.advanceTo(12n);
    expect(task.restorePoint.checkpoint).toBe(15n);
  });

  it('initializes each processor with the task and its stores', async () => {
    const store = new MemoryStore('windows');
    const inits: unknown[] = [];
    const topology = new Topology()
      .addProcessor('p', () => ({
        init: (ctx) => {
          inits.push([ctx.task, ctx.getStateStore('windows')]);
        },
        process: () => undefined,
      }))
      .addStateStore('windows', () => store);
    const task = new StreamTask(id, topology, recordingProducer().producer);
    await task.open();
    expect(inits).toEqual([[id, store]]);
    expect(() => task.getStateStore('missing')).toThrow('no state store "missing" in task usage-events/4');
  });
});

describe('StreamTask: batches', () => {
  it('runs each record through the chain, sends the sinks, then commits the stores through the last offset', async () => {
    const store = new MemoryStore('s', { checkpoint: 9n });
    const { task, sent } = build([store]);
    await task.open();
    await task.processBatch([record(10, 'a'), record(11, 'b')], 1_000);
    expect(sent).toEqual([
      {
        topic: 'outputs',
        acks: -1,
        messages: [
          { key: null, value: 'A' },
          { key: null, value: 'B' },
        ],
      },
    ]);
    expect(store.commits).toEqual([{ after: 9n, last: '11' }]);
    expect(task.restorePoint.checkpoint).toBe(11n);
  });

  it('commits through a transaction marker past the last record', async () => {
    const store = new MemoryStore('s', { checkpoint: 9n });
    const { task } = build([store]);
    await task.open();
    await task.processBatch([record(10, 'a')], 1_000, '12');
    expect(store.commits).toEqual([{ after: 9n, last: '12' }]);
    expect(task.restorePoint.checkpoint).toBe(12n);
  });

  it('marks records below replayUntil as replays', async () => {
    const seen: { value: string; replaying: boolean; offset: string }[] = [];
    const { task } = build([new MemoryStore('s', { checkpoint: 4n, replayUntil: 6n })], seen);
    await task.open();
    await task.processBatch([record(5, 'a'), record(6, 'b')], 1_000);
    expect(seen).toEqual([
      { value: 'A', replaying: true, offset: '5' },
      { value: 'B', replaying: false, offset: '6' },
    ]);
  });

  it('a failing processor sends nothing, commits nothing and aborts the stores', async () => {
    const store = new MemoryStore('s', { checkpoint: 1n });
    const { task, sent } = build([store]);
    await task.open();
    await expect(task.processBatch([record(2, 'a'), record(3, 'boom')], 1_000)).rejects.toThrow(
      'processor failed',
    );
    expect(sent).toEqual([]);
    expect(store.commits).toEqual([]);
    expect(store.aborts).toBe(1);
    expect(task.restorePoint.checkpoint).toBe(1n);
  });

  it('a send the broker refuses leaves the stores uncommitted (the batch comes again)', async () => {
    const store = new MemoryStore('s', { checkpoint: 1n });
    const { task, failNext } = build([store]);
    await task.open();
    failNext();
    await expect(task.processBatch([record(2, 'a')], 1_000)).rejects.toThrow('the broker refused');
    expect(store.commits).toEqual([]);
    expect(store.aborts).toBe(1);
    expect(task.restorePoint.checkpoint).toBe(1n);
  });

  it('refuses a send to a sink the topology does not have', async () => {
    const { task } = build([new MemoryStore('s', { checkpoint: 1n })]);
    await task.open();
    await expect(task.processBatch([record(2, 'nowhere')], 1_000)).rejects.toThrow('no sink "nowhere"');
  });

  it('skipThrough moves the checkpoint over empty input that follows it directly, and nothing else', async () => {
    const store = new MemoryStore('s', { checkpoint: 9n });
    const { task } = build([store]);
    await task.open();
    await task.skipThrough('12', '14', 1_000); // a gap after 9: nothing assumed
    expect(task.restorePoint.checkpoint).toBe(9n);
    await task.skipThrough('10', '11', 1_000);
    expect(store.commits).toEqual([{ after: 9n, last: '11' }]);
    expect(task.restorePoint.checkpoint).toBe(11n);
  });

  it('skipThrough assumes nothing while a seek is pending', async () => {
    const store = new MemoryStore('s', { checkpoint: 9n, seekTo: '5' });
    const { task } = build([store]);
    await task.open();
    await task.skipThrough('10', '11', 1_000);
    expect(store.commits).toEqual([]);
  });
});

describe('StreamTask: lifecycle', () => {
  it('verify reports the worst health of its stores, asked with the task checkpoint', async () => {
    const a = new MemoryStore('a', { checkpoint: 7n });
    const b = new MemoryStore('b');
    const { task } = build([a, b]);
    await task.open();
    expect(await task.verify()).toBe('ok');
    b.health = 'behind';
    a.health = 'fenced';
    expect(await task.verify()).toBe('behind');
    a.health = 'lost';
    expect(await task.verify()).toBe('lost');
    expect(a.verified).toEqual([7n, 7n, 7n]);
  });

  it('batches and exclusive work (punctuations) take turns, in the order they came', async () => {
    const store = new MemoryStore('s', { checkpoint: 0n });
    const { task } = build([store]);
    await task.open();
    const order: string[] = [];
    const release = deferred();
    const punctuation = task.exclusive(async () => {
      order.push('punctuation starts');
      await release.promise;
      order.push('punctuation ends');
    });
    const batch = task.processBatch([record(1, 'a')], 1_000).then(() => order.push('batch committed'));
    release.resolve();
    await Promise.all([punctuation, batch]);
    expect(order).toEqual(['punctuation starts', 'punctuation ends', 'batch committed']);
  });

  it('a failed turn does not block the next', async () => {
    const { task } = build([new MemoryStore('s')]);
    await task.open();
    await expect(task.exclusive(() => Promise.reject(new Error('punctuation failed')))).rejects.toThrow();
    expect(await task.exclusive(async () => 'next')).toBe('next');
  });

  it('close closes the processors and the stores', async () => {
    const store = new MemoryStore('s');
    let processorClosed = false;
    const topology = new Topology()
      .addProcessor('p', () => ({
        process: () => undefined,
        close: () => {
          processorClosed = true;
        },
      }))
      .addStateStore('s', () => store);
    const task = new StreamTask(id, topology, recordingProducer().producer);
    await task.open();
    await task.close();
    expect(processorClosed).toBe(true);
    expect(store.closed).toBe(true);
  });
});
