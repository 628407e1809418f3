/**
 * A stuck producer fails loudly (issue 14, item 5). The failed-records topic is deleted under a running
 * pipeline (the broker creates no topic by itself), and bad events arrive: the processor must stop
 * before them (never skip them, never hang silently), report itself not ready and count the failures on
 * /metrics. Once the topic is back, it recovers by itself: every bad event is on the failed-records
 * topic and every good event is billed at AWS (the emulator) with its exact quantity.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import { makeSubmissionRecord } from '../../src/metering/submission-record.ts';
import { eventMessage, type Outgoing, produceMessages } from '../../src/produce/producer.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { deleteTopics, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { acceptedAtAws, readAllMessages, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
// Their keys spread over all three partitions of the usage topic.
const tenants = ['tenant-0', 'tenant-2', 'tenant-5', 'tenant-1', 'tenant-3', 'tenant-6'];
const customers = Object.fromEntries(tenants.map((t) => [t, { customerIdentifier: `cust-${t}` }]));
const dimensions = ['api_calls', 'jobs'];

/** What AWS must hold: per (customer identifier, dimension, hour), the sum of the events. */
function expectedAccepted(events: readonly RawEvent[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events) {
    const key = `cust-${e.customer}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
    out.set(key, (out.get(key) ?? 0) + e.quantity);
  }
  return out;
}

/** Prometheus text format → `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

async function topicExists(topic: string): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.listTopics()).includes(topic);
  } finally {
    await admin.disconnect();
  }
}

/** Good events spread over the given hours, and a unique malformed message after every `badEvery` of them. */
function usage(prefix: string, hours: number[], count: number, badEvery: number) {
  const events: RawEvent[] = [];
  const bad: string[] = [];
  const messages: Outgoing[] = [];
  for (let i = 0; i < count; i++) {
    const customer = tenants[i % tenants.length] as string;
    const hour = hours[i % hours.length] as number;
    const e: RawEvent = {
      id: `${prefix}-${i}`,
      customer,
      dimension: dimensions[Math.floor(i / tenants.length) % dimensions.length] as string,
      quantity: 1 + (i % 7),
      timestamp: new Date(hour + ((i * 61_000) % HOUR_MS)).toISOString(),
    };
    events.push(e);
    messages.push(eventMessage(e));
    if (i % badEvery === badEvery - 1) {
      // Keyed by each customer in turn, so bad events sit between good ones on every partition.
      const value = `{"id": "${prefix}-bad-${i}", "customer": `;
      bad.push(value);
      messages.push({ key: tenants[Math.floor(i / badEvery) % tenants.length] as string, value });
    }
  }
  return { events, bad, messages };
}

describe('the failed-records topic disappears while bad events arrive', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    // Bring the topic back first: a producer stuck on it must be able to finish before the stop.
    if (tp) await tp.createTopics(kafka);
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('stops before them, reports not ready and counts it, then recovers and bills everything', async () => {
    emulator = await startEmulator({ customers: tenants.map((t) => `cust-${t}`) });
    tp = testPipeline('dlq-gone', {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    const topics = tp.topics;
    await tp.createTopics(kafka);
    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });
    const ops = `http://127.0.0.1:${pipeline.ops?.port}`;
    const status = async (path: string) => (await fetch(`${ops}${path}`)).status;
    const scrape = async () => parseMetrics(await (await fetch(`${ops}/metrics`)).text());
    const series = (name: string) => `${name}{producer="processor",topic="${topics.failed}"}`;
    const accepted = () => acceptedAtAws(emulator);
    const now = Date.now();
    const h3 = hourStart(now) - 3 * HOUR_MS;
    const h2 = hourStart(now) - 2 * HOUR_MS;
    const h1 = hourStart(now) - HOUR_MS;

    // Phase 1, healthy: the oldest hour is billed and its bad events are dead-lettered.
    const first = usage(`${tp.run}-a`, [h3], 40, 20);
    await produceMessages(first.messages, { kafka, topic: topics.usage });
    const firstExpected = expectedAccepted(first.events);
    await waitFor(
      async () =>
        accepted().size >= firstExpected.size &&
        (await readAllMessages(kafka, topics.failed)).length >= first.bad.length
          ? true
          : undefined,
      { timeoutMs: 90_000, describe: () => `${accepted().size} of ${firstExpected.size} accepted` },
    );
    expect(await status('/readyz')).toBe(200);

    // The topic goes away (as if deleted by mistake, or denied by an ACL).
    await deleteTopics(kafka, [topics.failed]);
    await waitFor(async () => ((await topicExists(topics.failed)) ? undefined : true), {
      describe: () => `${topics.failed} still listed`,
    });

    // Phase 2: the next two hours, with bad events among them.
    const second = usage(`${tp.run}-b`, [h2, h1], 240, 12);
    await produceMessages(second.messages, { kafka, topic: topics.usage });
    const written = await readAllMessages(kafka, topics.usage);
    const badValues = new Set(second.bad);
    const firstBad = new Map<number, bigint>();
    for (const m of written) {
      if (!badValues.has(String(m.value))) continue;
      const at = firstBad.get(m.partition);
      if (at === undefined || BigInt(m.offset) < at) firstBad.set(m.partition, BigInt(m.offset));
    }
    expect([...firstBad.keys()].sort()).toEqual([0, 1, 2]);

    // Not ready at once, and the failed sends are counted: more than one per stuck partition, so a batch
    // came back (redelivered, not skipped) and failed again.
    await waitFor(async () => ((await status('/readyz')) === 503 ? true : undefined), {
      timeoutMs: 90_000,
      describe: async () => `/readyz still answers ${await status('/readyz')}`,
    });
    const stuck = await waitFor(
      async () => {
        const m = await scrape();
        return (m.get(series('meterline_produce_failures_total')) ?? 0) > firstBad.size ? m : undefined;
      },
      {
        timeoutMs: 90_000,
        describe: async () =>
          `${series('meterline_produce_failures_total')} = ${(await scrape()).get(series('meterline_produce_failures_total'))}`,
      },
    );
    expect(stuck.get(series('meterline_producer_failing'))).toBe(1);
    // The processor stopped before the first bad event of each partition: nothing was skipped, and no
    // hour of phase 2 was closed with part of its usage missing.
    const tasks = (await pipeline.processor?.app.tasks()) ?? [];
    for (const [partition, offset] of firstBad) {
      const task = tasks.find((t) => t.id.partition === partition);
      const checkpoint = task?.restorePoint.checkpoint ?? -1n;
      expect(
        checkpoint < offset,
        `partition ${partition}: checkpoint ${checkpoint}, bad event at ${offset}`,
      ).toBe(true);
    }
    const secondHours = new Set([hourIso(h2), hourIso(h1)]);
    expect(emulator.state.snapshot().records.filter((r) => secondHours.has(r.timestamp))).toEqual([]);
    // Liveness fails only after minutes of continuous failure (the default): the pod is not restarted yet.
    expect(await status('/healthz')).toBe(200);

    // The topic is back: the pipeline recovers by itself.
    await tp.createTopics(kafka);
    const dead = await waitFor(
      async () => {
        const m = (await readAllMessages(kafka, topics.failed)).map(
          (x) => JSON.parse(String(x.value)) as FailedRecord,
        );
        const originals = new Set(
          m.map((f) => Buffer.from(f.originalBase64 ?? '', 'base64').toString('utf8')),
        );
        return second.bad.every((b) => originals.has(b)) ? m : undefined;
      },
      { timeoutMs: 120_000, describe: () => `not every bad event of phase 2 is on ${topics.failed}` },
    );
    for (const f of dead) expect(f).toMatchObject({ stage: 'ingest', reason: 'malformed_json' });
    expect(new Set(dead.map((f) => Buffer.from(f.originalBase64 ?? '', 'base64').toString('utf8')))).toEqual(
      badValues,
    );

    const expected = expectedAccepted([...first.events, ...second.events]);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().size} of ${expected.size} records accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);

    await waitFor(async () => ((await status('/readyz')) === 200 ? true : undefined), {
      describe: async () => `/readyz still answers ${await status('/readyz')}`,
    });
    const after = await scrape();
    expect(after.get(series('meterline_producer_failing'))).toBe(0);
    expect(await status('/healthz')).toBe(200);
  }, 420_000);
});

describe('the failed-records topic disappears while the worker dead-letters', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    if (tp) await tp.createTopics(kafka);
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('keeps the batch, reports not ready and counts it, then dead-letters and bills it', async () => {
    emulator = await startEmulator({ customers: tenants.map((t) => `cust-${t}`) });
    tp = testPipeline('dlq-gone-worker', {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    const topics = tp.topics;
    await tp.createTopics(kafka);
    pipeline = await startPipeline(tp.config(['worker']), testLogger(), { processor: false, worker: true });
    const ops = `http://127.0.0.1:${pipeline.ops?.port}`;
    const status = async (path: string) => (await fetch(`${ops}${path}`)).status;
    const scrape = async () => parseMetrics(await (await fetch(`${ops}/metrics`)).text());
    const series = (name: string) => `${name}{producer="worker",topic="${topics.failed}"}`;
    expect(await status('/readyz')).toBe(200);

    await deleteTopics(kafka, [topics.failed]);
    await waitFor(async () => ((await topicExists(topics.failed)) ? undefined : true), {
      describe: () => `${topics.failed} still listed`,
    });

    // One record for a tenant without an AWS identity (dead-lettered), and billable ones for each partition.
    const hour = hourStart(Date.now()) - HOUR_MS;
    const record = (customer: string, quantity: number) =>
      makeSubmissionRecord({
        productCode: 'prod-test',
        customer,
        dimension: 'api_calls',
        hourMs: hour,
        quantity,
        api: 'BatchMeterUsage',
        finalizedAtMs: Date.now(),
      });
    const unmapped = record('tenant-without-mapping', 5);
    const billable = tenants.map((t, i) => record(t, 10 + i));
    await produceMessages(
      [unmapped, ...billable].map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      { kafka, topic: topics.submissions },
    );

    await waitFor(async () => ((await status('/readyz')) === 503 ? true : undefined), {
      timeoutMs: 90_000,
      describe: async () => `/readyz still answers ${await status('/readyz')}`,
    });
    const stuck = await waitFor(
      async () => {
        const m = await scrape();
        return (m.get(series('meterline_produce_failures_total')) ?? 0) >= 2 ? m : undefined;
      },
      { timeoutMs: 90_000, describe: () => 'the worker counted fewer than 2 failed sends' },
    );
    expect(stuck.get(series('meterline_producer_failing'))).toBe(1);
    expect(await status('/healthz')).toBe(200);

    await tp.createTopics(kafka);
    const dead = await waitFor(async () => {
      const m = await readAllMessages(kafka, topics.failed);
      return m.length ? m.map((x) => JSON.parse(String(x.value)) as FailedRecord) : undefined;
    });
    expect(new Set(dead.map((f) => `${f.stage}|${f.reason}|${f.record?.recordId}`))).toEqual(
      new Set([`submit|customer_mapping_missing|${unmapped.recordId}`]),
    );
    const expected = new Map(billable.map((r) => [`cust-${r.customer}|api_calls|${r.hour}`, r.quantity]));
    const accepted = () => acceptedAtAws(emulator);
    await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().size} of ${expected.size} records accepted`,
    });
    expect(accepted()).toEqual(expected);
    expect(emulator.state.snapshot().duplicates).toBe(0);
    await waitFor(async () => ((await status('/readyz')) === 200 ? true : undefined), {
      describe: async () => `/readyz still answers ${await status('/readyz')}`,
    });
    expect((await scrape()).get(series('meterline_producer_failing'))).toBe(0);
  }, 420_000);
});

describe('METERLINE_PRODUCE_UNHEALTHY_AFTER', () => {
  let tp: TestPipeline | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    if (tp) await tp.createTopics(kafka);
    await pipeline?.stop();
    await tp?.cleanup(kafka);
  });

  it('fails /healthz once sends have failed that long, and clears it with the first success', async () => {
    // The setting under test, set just above the (default) send deadline it must exceed.
    tp = testPipeline('dlq-gone-liveness', { customers, env: { METERLINE_PRODUCE_UNHEALTHY_AFTER: '15s' } });
    const topics = tp.topics;
    await tp.createTopics(kafka);
    pipeline = await startPipeline(tp.config(['worker']), testLogger(), { processor: false, worker: true });
    const ops = `http://127.0.0.1:${pipeline.ops?.port}`;
    const probe = async (path: string) => {
      const res = await fetch(`${ops}${path}`);
      return { status: res.status, body: await res.text() };
    };
    await deleteTopics(kafka, [topics.failed]);
    await waitFor(async () => ((await topicExists(topics.failed)) ? undefined : true));
    const unmapped = makeSubmissionRecord({
      productCode: 'prod-test',
      customer: 'tenant-without-mapping',
      dimension: 'api_calls',
      hourMs: hourStart(Date.now()) - HOUR_MS,
      quantity: 1,
      api: 'BatchMeterUsage',
      finalizedAtMs: Date.now(),
    });
    await produceMessages([{ key: unmapped.customer, value: JSON.stringify(unmapped) }], {
      kafka,
      topic: topics.submissions,
    });

    // Not ready at once, still alive: one failed send must not restart the pod.
    const notReady = await waitFor(async () => {
      const r = await probe('/readyz');
      return r.status === 503 ? r : undefined;
    });
    expect(notReady.body).toContain(`producer worker cannot send to ${topics.failed}`);
    expect((await probe('/healthz')).status).toBe(200);
    const dead = await waitFor(
      async () => {
        const r = await probe('/healthz');
        return r.status === 503 ? r : undefined;
      },
      { timeoutMs: 90_000, describe: () => '/healthz still answers 200' },
    );
    expect(dead.body).toContain(`producer worker cannot send to ${topics.failed}`);

    await tp.createTopics(kafka);
    await waitFor(async () => ((await probe('/healthz')).status === 200 ? true : undefined), {
      describe: () => '/healthz still answers 503 with the topic back',
    });
    expect((await probe('/readyz')).status).toBe(200);
    const failed = await readAllMessages(kafka, topics.failed);
    expect(new Set(failed.map((m) => (JSON.parse(String(m.value)) as FailedRecord).reason))).toEqual(
      new Set(['customer_mapping_missing']),
    );
  }, 300_000);
});
