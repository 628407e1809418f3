/**
 * The Prometheus endpoint tells the truth: a pipeline runs against an emulator that throttles and fails
 * calls on purpose, with resent events, malformed input and a customer without an AWS mapping. Then
 * `/metrics` is scraped over HTTP, and each key series must equal what the emulator and the topics say
 * happened: not "greater than zero", the exact count.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../../src/app/pipeline.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import { eventMessage, type Outgoing, produceMessages } from '../../../src/produce/producer.ts';
import { syntheticEvents } from '../../../src/produce/synthetic.ts';
import { hourStart } from '../../../src/time/hours.ts';
import { testKafka, testLogger, waitFor } from '../../support/harness.ts';
import { readAllMessages, type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();
// Enough customers for a dozen BatchMeterUsage calls (25 records each), so the seeded faults land.
const customers = Object.fromEntries(
  Array.from({ length: 40 }, (_, i) => [`tenant-${i}`, { customerIdentifier: `cust-${i}` }]),
);
const mapped = Object.keys(customers);
const unmapped = 'tenant-without-mapping';

/** Parses the Prometheus text format into `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

describe('/metrics after a run with injected faults', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('counts events, dead letters, AWS calls by outcome and accepted records exactly', async () => {
    emulator = await startEmulator({
      customers: mapped.map((t) => customers[t]?.customerIdentifier as string),
      faults: { seed: 11, throttleRate: 0.3, errorRate: 0.2 },
    });
    tp = testPipeline('metrics', {
      customers,
      env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url },
    });
    await tp.createTopics(kafka);
    const events = [
      ...syntheticEvents({
        count: 3_000,
        customers: [...mapped, unmapped],
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: Date.now(),
        duplicateRate: 0.05,
        seed: 3,
        idPrefix: tp.run,
      }),
    ];
    const malformed: Outgoing[] = [
      { key: 'm1', value: '{"id": "broken", ' },
      { key: 'm2', value: 'not json at all' },
    ];
    await produceMessages([...events.map(eventMessage), ...malformed], { kafka, topic: tp.topics.usage });
    const ids = new Set(events.map((e) => e.id));
    const resent = events.length - ids.size;
    expect(resent).toBeGreaterThan(0);

    pipeline = await startPipeline(tp.config(), testLogger(), { processor: true, worker: true });
    const port = pipeline.ops?.port;
    expect(port).toBeGreaterThan(0);

    // Every record is accepted, or held (the unmapped tenant's: it waits for a registration), and the
    // malformed events are dead-lettered.
    const unmappedRecords = new Set(
      events
        .filter((e) => e.customer === unmapped)
        .map((e) => `${e.dimension}|${hourStart(Date.parse(String(e.timestamp)))}`),
    ).size;
    const billable = new Set(
      events
        .filter((e) => e.customer !== unmapped)
        .map((e) => `${e.customer}|${e.dimension}|${hourStart(Date.parse(String(e.timestamp)))}`),
    ).size;
    const failed = async () => (await readAllMessages(kafka, tp?.topics.failed as string)).length;
    await waitFor(
      async () =>
        (emulator?.state.snapshot().records.length ?? 0) >= billable && (await failed()) >= 2
          ? true
          : undefined,
      {
        timeoutMs: 180_000,
        describe: async () =>
          `${emulator?.state.snapshot().records.length} of ${billable} accepted, ${await failed()} of 2 dead letters`,
      },
    );
    const snap = emulator.state.snapshot();
    expect(snap.injected.throttling).toBeGreaterThan(0);
    expect(snap.injected.internalError).toBeGreaterThan(0);

    // The worker's gauges settle once its last batch is done: poll the scrape, not a sleep.
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.headers.get('content-type')).toContain('text/plain');
      return parseMetrics(await res.text());
    };
    const m = await waitFor(
      async () => {
        const s = await scrape();
        const held = [...s]
          .filter(([k]) => k.startsWith('meterline_held_records{'))
          .reduce((a, [, x]) => a + x, 0);
        return s.get('meterline_worker_pending_records') === 0 && held === unmappedRecords ? s : undefined;
      },
      {
        timeoutMs: 30_000,
        describe: () => 'worker still has pending records, or not every unmapped record is held',
      },
    );
    const v = (series: string) => m.get(series) ?? 0;

    expect(v('meterline_events_total{result="applied"}')).toBe(ids.size);
    expect(v('meterline_events_total{result="duplicate"}')).toBe(resent);
    expect(v('meterline_events_total{result="dead_lettered"}')).toBe(2);
    expect(v('meterline_dead_letters_total{stage="ingest",reason="malformed_json"}')).toBe(2);
    expect(v('meterline_dead_letters_total{stage="submit",reason="customer_mapping_missing"}')).toBe(0);
    // Held for a day less the submit margin: the gauge counts down from there.
    expect(v('meterline_held_dead_letter_in_seconds')).toBeGreaterThan(0);
    expect(v('meterline_records_accepted_total{api="BatchMeterUsage"}')).toBe(snap.records.length);
    // Every injected fault was seen by the worker as exactly that outcome.
    expect(v('meterline_aws_calls_total{api="BatchMeterUsage",outcome="aws_throttled"}')).toBe(
      snap.injected.throttling,
    );
    expect(v('meterline_aws_calls_total{api="BatchMeterUsage",outcome="aws_unavailable"}')).toBe(
      snap.injected.internalError,
    );
    const calls = [...m]
      .filter(([k]) => k.startsWith('meterline_aws_calls_total{api="BatchMeterUsage"'))
      .reduce((sum, [, n]) => sum + n, 0);
    expect(v('meterline_aws_call_duration_seconds_count{api="BatchMeterUsage"}')).toBe(calls);
    expect(v('meterline_aws_calls_total{api="BatchMeterUsage",outcome="ok"}')).toBe(
      calls - snap.injected.throttling - snap.injected.internalError,
    );
    expect(v('meterline_rate_limiter_throttled_total')).toBe(snap.injected.throttling);
    // Each valid event (resends included) was measured against its broker timestamp.
    expect(
      v('meterline_clock_skew_absolute_seconds_count{direction="ahead"}') +
        v('meterline_clock_skew_absolute_seconds_count{direction="behind"}'),
    ).toBe(events.length);
    // Standard process metrics, unprefixed; the build's series stays.
    expect(m.has('process_cpu_seconds_total')).toBe(true);
    expect(m.has('meterline_process_cpu_seconds_total')).toBe(false);
    expect([...m.keys()].some((k) => k.startsWith('meterline_build_info{'))).toBe(true);
    // Nothing is left to bill: the worker's oldest unsubmitted hour is cleared.
    expect(v('meterline_oldest_unsubmitted_hour_age_seconds{stage="worker"}')).toBe(0);
    expect(v('meterline_finalize_lag_seconds_count')).toBeGreaterThan(0);
  }, 300_000);
});
