/**
 * The commit stage reads every partition's event time, computes the close boundary, then closes each task's
 * hours in turn, each while it holds that task (batches and punctuations take turns on a task). A batch
 * that lands on a partition after that read, before the partition's turn, must not have its hour closed by
 * the boundary read without it: the partition's own input holds the watermark back ("a backlog holds
 * everything back"). Otherwise the hour is frozen from that first batch and the rest of its usage is
 * carried into the open hour.
 *
 * How lost-reply failed in full CI runs: its processor started on empty topics, so a punctuation read every
 * partition as idle (the watermark was the wall clock) just before the first batches landed, and closed the
 * three past hours of partitions 1 and 2 (their turn came after partition 0's) with one batch in them.
 * Here that interleaving is forced: the test holds the first task while a punctuation waits for it, and the
 * usage lands on the next task meanwhile.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { partitionOfCustomer } from '../../src/kafka/partitioner.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../support/harness.ts';
import {
  frozenRecords,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const PARTITIONS = 3;

/** A customer name whose key hashes to the partition. */
function customerOn(partition: number): string {
  for (let i = 0; ; i++) if (partitionOfCustomer(`c${i}`, PARTITIONS) === partition) return `c${i}`;
}

describe('a batch that lands while the commit stage closes hours', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  let release = () => {};
  const producer = kafka.producer();
  afterAll(async () => {
    release();
    await pipeline?.stop();
    await producer.disconnect();
    await tp?.cleanup(kafka);
  });

  // Failed before the commit stage bounded each task's hours, at its turn, by a boundary that counts the
  // input the task applied since the read as unread then (10 of the 20 events were carried).
  it('does not have its hour closed by a boundary read before it landed', async () => {
    // Long enough that the second part of the usage arrives while its partition still counts as active.
    const t = testPipeline('stale-boundary', {
      partitions: PARTITIONS,
      // Mapped tenants: usage of unmapped ones is held, not emitted.
      customers: {
        ...TEST_CUSTOMERS,
        ...Object.fromEntries([0, 1, 2].map((p) => [customerOn(p), { customerIdentifier: `cust-${p}` }])),
      },
      env: { METERLINE_IDLE_TIMEOUT: '10s' },
    });
    tp = t;
    await t.createTopics(kafka);
    await producer.connect();
    // Empty topics: every partition counts as idle, so the watermark follows the wall clock.
    pipeline = await startPipeline(t.config(['processor']), testLogger(), {
      processor: true,
      worker: false,
    });
    const processor = pipeline.processor;
    if (!processor) throw new Error('no processor');
    // The commit stage closes the tasks' hours in this order.
    const tasks = await waitFor(async () => {
      const t = await processor.app.tasks();
      return t.length === PARTITIONS ? t : undefined;
    });
    const [first, next] = tasks;
    if (!first || !next) throw new Error('no tasks');
    const customer = customerOn(next.id.partition);
    const usage = t.topics.usage;
    const hour = hourStart(Date.now()) - 2 * HOUR_MS;
    const send = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const event = {
          id: `${t.run}-${i}`,
          customer,
          dimension: 'api_calls',
          quantity: 1,
          timestamp: hour + 60_000 * (i + 1),
        };
        await producer.send({ topic: usage, messages: [{ key: customer, value: JSON.stringify(event) }] });
      }
    };
    const applied = (n: number) =>
      waitFor(() => (processor.stats.applied >= n ? true : undefined), {
        describe: () => `${processor.stats.applied} of ${n} events applied`,
      });
    // Punctuations, counted as each sets its boundary (right after reading the event times).
    const stats = processor.commitStage.stats;
    let boundary = stats.closeBoundary;
    let punctuations = 0;
    Object.defineProperty(stats, 'closeBoundary', {
      get: () => boundary,
      set: (v: number) => {
        boundary = v;
        punctuations += 1;
      },
    });
    const nextPunctuation = () => {
      const seen = punctuations;
      return waitFor(() => (punctuations > seen ? true : undefined));
    };

    // The first task is busy (as with a batch of its own); a punctuation reads the event times meanwhile,
    // all idle, and waits for it.
    const busy = first.exclusive(
      () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
    );
    await nextPunctuation();
    // Usage of an hour two hours ago lands on the next task: a producer catching up, its first part.
    await send(0, 10);
    await applied(10);
    release();
    await busy;
    // That punctuation went on to the next task, and a new one has started; then the rest of the usage.
    await nextPunctuation();
    await send(10, 20);
    await applied(20);

    // The hour closes once the partitions are idle again, with all 20 events in it.
    const id = `prod-test|${customer}|api_calls|${hourIso(hour)}`;
    const record = await waitFor(
      async () => frozenRecords(await readAllMessages(kafka, t.topics.submissions)).get(id),
      { timeoutMs: 60_000, describe: () => `no record ${id}` },
    );
    expect(processor.stats.carriedLate, 'events carried into the open hour').toBe(0);
    expect(record.quantity).toBe(20);
  }, 120_000);
});
