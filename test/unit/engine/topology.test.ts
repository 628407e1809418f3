import { describe, expect, it } from 'vitest';
import { Topology } from '../../../src/engine/topology.ts';
import { MemoryStore } from './engine-support.ts';

describe('Topology', () => {
  it('keeps the source, the processor chain in order, the sinks, the stores and the punctuators', () => {
    const punctuator = async () => undefined;
    const t = new Topology()
      .addSource('usage', 'usage-events')
      .addProcessor('decode', () => ({ process: () => undefined }))
      .addProcessor('window', () => ({ process: () => undefined }))
      .addStateStore('windows', () => new MemoryStore('windows'))
      .addSink('failed', 'metering-failed')
      .addSink('repartition', 'usage-events')
      .schedule('commit', 60_000, punctuator);
    expect(t.source).toEqual({ name: 'usage', topic: 'usage-events' });
    expect(t.processors.map((p) => p.name)).toEqual(['decode', 'window']);
    expect([...t.sinks]).toEqual([
      ['failed', 'metering-failed'],
      ['repartition', 'usage-events'],
    ]);
    expect(t.stores.map((s) => s.name)).toEqual(['windows']);
    expect(t.punctuators).toEqual([{ name: 'commit', intervalMs: 60_000, punctuator }]);
  });

  it('describes itself the way its diagram reads', () => {
    const t = new Topology()
      .addSource('usage', 'usage-events')
      .addProcessor('window', () => ({ process: () => undefined }))
      .addStateStore('windows', () => new MemoryStore('windows'))
      .addSink('failed', 'metering-failed')
      .schedule('commit', 5_000, async () => undefined);
    expect(t.describe()).toBe(
      'source usage (usage-events) → processor window; sink failed (metering-failed); stores: windows; ' +
        'punctuators: commit every 5000 ms',
    );
  });

  it('makes processors and stores per task: each call of create is a new instance', () => {
    const t = new Topology()
      .addProcessor('p', () => ({ process: () => undefined }))
      .addStateStore('s', (task) => new MemoryStore(`s-${task.partition}`));
    const [p] = t.processors;
    const [s] = t.stores;
    expect(p?.create()).not.toBe(p?.create());
    expect(s?.create({ topic: 'u', partition: 1 }).name).toBe('s-1');
    expect(s?.create({ topic: 'u', partition: 2 }).name).toBe('s-2');
  });
});
