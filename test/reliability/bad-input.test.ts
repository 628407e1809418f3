/**
 * Bad input never crashes the processor and is never dropped silently: every kind in the corpus lands on
 * the failed-records topic with its reason code and original bytes, while the good events between them
 * are all counted.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import { type Outgoing, produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { badInputCorpus } from '../support/bad-input-corpus.ts';
import { failedRecordValidator, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { frozenRecords, readAllMessages, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const tp = testPipeline('bad-input', { dimensions: [{ name: 'api_calls' }] });
let pipeline: RunningPipeline | undefined;

afterAll(async () => {
  await pipeline?.stop();
  await tp.cleanup(kafka);
});

describe('bad input on the real stack', () => {
  it('dead-letters each kind with its reason and counts every good event in between', async () => {
    const now = Date.now();
    const corpus = badInputCorpus(now);
    const hour = hourStart(now) - 2 * HOUR_MS;
    const messages: Outgoing[] = [];
    let good = 0;
    corpus.forEach((bad, i) => {
      for (let k = 0; k < 5; k++, good++) {
        const e = {
          id: `g${good}`,
          customer: 'acme',
          dimension: 'api_calls',
          quantity: 2,
          timestamp: hour + good * 1000,
        };
        messages.push({ key: 'acme', value: JSON.stringify(e) });
      }
      messages.push({ key: `bad-${i}`, value: bad.value });
    });
    await tp.createTopics(kafka);
    await produceMessages(messages, { kafka, topic: tp.topics.usage });
    pipeline = await startPipeline(tp.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
    });

    const failed = await waitFor(async () => {
      const m = await readAllMessages(kafka, tp.topics.failed);
      return m.length >= corpus.length
        ? m.map((x) => JSON.parse(String(x.value)) as FailedRecord)
        : undefined;
    });
    expect(failed).toHaveLength(corpus.length);
    const validate = failedRecordValidator();
    for (const f of failed) expect(validate(f), JSON.stringify(validate.errors)).toBe(true);
    corpus.forEach((bad, i) => {
      const hit = failed.find((f) => f.source?.key === `bad-${i}`);
      expect(hit?.reason, bad.kind).toBe(bad.reason);
      expect(hit?.stage).toBe('ingest');
      expect(hit?.originalBase64, bad.kind).toBe(
        bad.value === null ? null : Buffer.from(bad.value).toString('base64'),
      );
    });

    const id = `prod-test|acme|api_calls|${hourIso(hour)}`;
    const records = await waitFor(async () => {
      const r = frozenRecords(await readAllMessages(kafka, tp.topics.submissions));
      return r.has(id) ? r : undefined;
    });
    expect(records.get(id)?.quantity).toBe(good * 2);
    expect(pipeline.processor?.stats.events).toBe(messages.length);
  });
});
