/**
 * The same events as Avro (through the real schema registry) and as JSON produce identical windows, and
 * both encodings can share one topic.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { createAvroEncoder } from '../../src/ingest/avro.ts';
import { eventMessage, type Outgoing, produceMessages } from '../../src/produce/producer.ts';
import { syntheticEvents } from '../../src/produce/synthetic.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import { frozenRecords, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const running: RunningPipeline[] = [];
const pipelines: TestPipeline[] = [];

afterAll(async () => {
  for (const p of running) await p.stop();
  for (const tp of pipelines) await tp.cleanup(kafka);
});

describe('Avro and JSON', () => {
  it('give identical windows for the same events, even mixed on one topic', async () => {
    const registryUrl = process.env.SCHEMA_REGISTRY_URL;
    if (!registryUrl) throw new Error('SCHEMA_REGISTRY_URL is not set: the stack starts the registry');
    const events = [
      ...syntheticEvents({
        count: 2_000,
        customers: ['acme', 'globex', 'initech'],
        dimensions: ['api_calls', 'jobs'],
        hours: 2,
        nowMs: Date.now(),
        seed: 5,
      }),
    ]
      .map((e, i) => (i % 3 === 0 ? { ...e, tags: { team: `t${i % 4}` } } : e))
      .sort((a, b) => Date.parse(String(a.timestamp)) - Date.parse(String(b.timestamp)));

    const json = testPipeline('json');
    const avro = testPipeline('avro', { env: { SCHEMA_REGISTRY_URL: registryUrl } });
    pipelines.push(json, avro);
    await json.createTopics(kafka);
    await avro.createTopics(kafka);
    const encoder = createAvroEncoder({ registryUrl, topic: avro.topics.usage });
    // Half of the Avro pipeline's input stays JSON: both encodings live side by side on one topic.
    const mixed: Outgoing[] = [];
    for (const [i, e] of events.entries()) {
      mixed.push(i % 2 === 0 ? { key: e.customer, value: await encoder.encode({ ...e }) } : eventMessage(e));
    }
    await produceMessages(events.map(eventMessage), { kafka, topic: json.topics.usage });
    await produceMessages(mixed, { kafka, topic: avro.topics.usage });

    for (const tp of [json, avro]) {
      running.push(
        await startPipeline(tp.config(['processor']), testLogger(), { processor: true, worker: false }),
      );
    }
    const windows = async (tp: TestPipeline) => {
      const records = frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
      return new Map(
        [...records.values()].map((r) => [`${r.customer}|${r.dimension}|${r.hour}`, r.quantity]),
      );
    };
    const expectedCount = new Set(
      events.map((e) => `${e.customer}|${e.dimension}|${String(e.timestamp).slice(0, 13)}`),
    ).size;
    const [fromJson, fromAvro] = await waitFor(async () => {
      const both = [await windows(json), await windows(avro)];
      return both.every((w) => w.size >= expectedCount) ? both : undefined;
    });
    expect(fromAvro).toEqual(fromJson);
    expect(fromJson?.size).toBe(expectedCount);
    expect((await readAllMessages(kafka, avro.topics.failed)).length).toBe(0);
  });
});
