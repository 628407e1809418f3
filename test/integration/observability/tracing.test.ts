/**
 * One submission, traced end to end in a real Jaeger: events produced by the `meterline produce` CLI,
 * windowed and finalized by a `meterline processor`, billed by a `meterline worker`, each a separate
 * process exporting OTLP. The record's trace must run from the finalize span through the worker's
 * consume span to the AWS call, carry our attributes, and link back to the producers' spans.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureServices, OTLP_ENV, stopStack } from '../../../deploy/stack/index.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import type { SubmissionRecord } from '../../../src/metering/submission-record.ts';
import {
  JaegerClient,
  type JaegerLog,
  type JaegerSpan,
  type JaegerTrace,
  tagValue,
} from '../../../src/observability/jaeger-client.ts';
import { ATTR, AWS_RECORD_EVENT } from '../../../src/observability/trace-attributes.ts';
import { spawnMeterline, stopGracefully } from '../../support/child.ts';
import { testKafka, uniqueId, waitFor } from '../../support/harness.ts';
import {
  awsIdOf,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);

describe('a submission traced from the producer to the AWS call, in Jaeger', () => {
  let jaeger: JaegerClient;
  let otlp: string;
  let startedJaeger = false;
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  const children: ReturnType<typeof spawnMeterline>[] = [];

  beforeAll(async () => {
    // A cold machine builds Jaeger from the Go module proxy first (about 9 minutes on 2 cores).
    const { env, outcomes } = await ensureServices(['jaeger'], { log: () => {} });
    startedJaeger = outcomes.jaeger === 'started';
    jaeger = new JaegerClient(env.METERLINE_JAEGER_URL as string);
    // An external Jaeger (its URL already in the environment) comes with its OTLP endpoint there too.
    otlp = (env[OTLP_ENV] ?? process.env[OTLP_ENV]) as string;
    expect(otlp, `${OTLP_ENV} for the external Jaeger`).toBeTruthy();
  }, 1_500_000);

  afterAll(async () => {
    for (const child of children) await stopGracefully(child);
    await emulator?.close();
    await tp?.cleanup(kafka);
    // Like the global setup: stop what this run started, unless the developer keeps the stack.
    if (startedJaeger && process.env.METERLINE_KEEP_STACK !== '1') await stopStack({ only: ['jaeger'] });
  });

  it('is one trace: finalize → worker → one CLIENT span per AWS call, with links to the producer spans', async () => {
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    tp = testPipeline('tracing', {
      env: {
        AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
        [OTLP_ENV]: otlp,
        OTEL_BSP_SCHEDULE_DELAY: '100',
        LOG_LEVEL: 'info',
      },
    });
    await tp.createTopics(kafka);
    const log = (role: string) => join(tmpdir(), `${uniqueId(`tracing-${role}`)}.log`);
    const processorLog = log('processor');
    children.push(spawnMeterline(['processor'], tp.env, processorLog));
    children.push(spawnMeterline(['worker'], tp.env, log('worker')));

    const producer = spawnMeterline(
      ['produce', '--count', '300', '--customers', tenants.join(','), '--hours', '1', '--no-progress'],
      tp.env,
      log('produce'),
    );
    const [code] = (await once(producer, 'exit')) as [number | null];
    expect(code).toBe(0);

    // 3 tenants × 2 dimensions in one closed hour: six records, all accepted.
    const accepted = () => emulator?.state.snapshot().records ?? [];
    await waitFor(() => (accepted().length >= 6 ? true : undefined), {
      timeoutMs: 120_000,
      describe: () => `${accepted().length} of 6 records accepted (log: ${processorLog})`,
    });
    const submissions = (await readAllMessages(kafka, tp.topics.submissions)).map(
      (m) => JSON.parse(String(m.value)) as SubmissionRecord,
    );
    const record = submissions[0] as SubmissionRecord;
    expect(record.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const awsRecord = accepted().find(
      (r) => r.dimension === record.dimension && r.customer === awsIdOf(record.customer),
    );

    // Spans are exported in batches: wait until every AWS call's span is in Jaeger. The six records may
    // come from more than one finalize span (one per partition of the hour), so from more than one trace.
    const calls = emulator.state.snapshot().calls.BatchMeterUsage ?? 0;
    expect(calls).toBeGreaterThan(0);
    const traces = new Map<string, JaegerTrace>();
    const callSpans = () =>
      dedupe([...traces.values()].flatMap((tr) => tr.spans)).filter(
        (s) => tagValue(s, ATTR.rpcSystem) === 'aws-api',
      );
    await waitFor(
      async () => {
        for (const r of submissions) {
          // Record ids repeat across runs in the same hour: only this run's traces (its own usage topic) count.
          const own = (await jaeger.tracesOfRecord(r.recordId, 3_600_000)).find((found) =>
            found.spans.some((s) => s.operationName === `finalize ${tp?.topics.usage}`),
          );
          const full = own && (await jaeger.trace(own.traceID));
          if (full) traces.set(full.traceID, full);
        }
        return callSpans().length >= calls && recordsInCalls(callSpans()).length >= submissions.length
          ? true
          : undefined;
      },
      {
        timeoutMs: 60_000,
        describe: () => `${calls} call(s); traces: ${[...traces.values()].map(spanNames).join(' / ')}`,
      },
    );
    const trace = traces.get(record.traceparent?.split('-')[1] ?? '');
    expect(trace, 'the trace the submission message carried').toBeDefined();
    const t = trace as JaegerTrace;
    const allSpans = dedupe([...traces.values()].flatMap((tr) => tr.spans));
    const processOf = (s: JaegerSpan) =>
      [...traces.values()].find((tr) => tr.traceID === s.traceID)?.processes[s.processID]?.serviceName;
    const service = (s: JaegerSpan) => t.processes[s.processID]?.serviceName;
    const parentOf = (s: JaegerSpan) => s.references.find((r) => r.refType === 'CHILD_OF')?.spanID;

    // The finalize span is the root, and it is the context the submission message carried.
    const finalize = t.spans.find((s) => s.operationName === `finalize ${tp?.topics.usage}`) as JaegerSpan;
    expect(finalize, spanNames(t)).toBeDefined();
    expect(service(finalize)).toBe('meterline-processor');
    expect(parentOf(finalize)).toBeUndefined();
    expect(tagValue(finalize, ATTR.windowStart)).toBe(record.hour);

    const consumeOf = (recordId: string) =>
      allSpans.find(
        (s) =>
          s.operationName === `process ${tp?.topics.submissions}` && tagValue(s, ATTR.recordId) === recordId,
      ) as JaegerSpan;
    const consume = consumeOf(record.recordId);
    expect(consume, spanNames(t)).toBeDefined();
    expect(service(consume)).toBe('meterline-worker');
    expect(parentOf(consume)).toBe(finalize.spanID);
    expect(tagValue(consume, ATTR.customer)).toBe(record.customer);
    expect(tagValue(consume, ATTR.dimension)).toBe(record.dimension);
    expect(tagValue(consume, ATTR.windowStart)).toBe(record.hour);
    expect(tagValue(consume, ATTR.outcome)).toBe('accepted');
    expect(tagValue(consume, ATTR.messagingSystem)).toBe('kafka');

    // One CLIENT span per AWS call, named and attributed by OpenTelemetry's AWS SDK conventions.
    const aws = callSpans();
    expect(aws.map((s) => s.operationName)).toEqual(Array(calls).fill('MarketplaceMetering.BatchMeterUsage'));
    for (const call of aws) {
      expect(processOf(call)).toBe('meterline-worker');
      expect(tagValue(call, 'span.kind')).toBe('client');
      expect(tagValue(call, ATTR.rpcService)).toBe('MarketplaceMetering');
      expect(tagValue(call, ATTR.rpcMethod)).toBe('BatchMeterUsage');
      expect(tagValue(call, ATTR.awsRequestId)).toMatch(/^[0-9a-f-]{36}$/);
      expect(tagValue(call, ATTR.cloudRegion)).toBe('us-east-1');
    }
    // Each record of the run is in exactly one call, as a span event with its AWS answer.
    expect(recordsInCalls(aws).sort()).toEqual(submissions.map((r) => r.recordId).sort());
    const callOf = (recordId: string) =>
      aws.find((s) => recordEvents(s).some((e) => fieldOf(e, ATTR.recordId) === recordId)) as JaegerSpan;
    const call = callOf(record.recordId);
    const event = recordEvents(call).find((e) => fieldOf(e, ATTR.recordId) === record.recordId);
    expect(event && fieldOf(event, ATTR.awsStatus)).toBe('Success');
    expect(event && fieldOf(event, ATTR.meteringRecordId)).toBe(awsRecord?.meteringRecordId);
    expect(event && fieldOf(event, ATTR.customer)).toBe(record.customer);
    expect(event && fieldOf(event, ATTR.dimension)).toBe(record.dimension);
    expect(event && fieldOf(event, ATTR.windowStart)).toBe(record.hour);
    // Every record's trace reaches its call: the call is the child of one record's consume span and links
    // to the others'; each of those links back to the call.
    for (const r of submissions) {
      const c = consumeOf(r.recordId);
      const callSpan = callOf(r.recordId);
      expect(c, `consume span of ${r.recordId}`).toBeDefined();
      const child = parentOf(callSpan) === c.spanID;
      const linked = callSpan.references.some(
        (ref) => ref.refType === 'FOLLOWS_FROM' && ref.spanID === c.spanID,
      );
      expect(child || linked, `call span reaches ${r.recordId}`).toBe(true);
      if (!child) {
        expect(
          c.references.some((ref) => ref.spanID === callSpan.spanID),
          `${r.recordId} links to its call`,
        ).toBe(true);
      }
    }

    // Links from the finalize span lead to producer spans of the hour's events, in their own traces.
    const links = finalize.references.filter((r) => r.refType === 'FOLLOWS_FROM');
    expect(links.length).toBeGreaterThan(0);
    expect(links.length).toBeLessThanOrEqual(16);
    const link = links[0] as { traceID: string; spanID: string };
    const produced = await jaeger.trace(link.traceID);
    const producerSpan = produced?.spans.find((s) => s.spanID === link.spanID) as JaegerSpan;
    expect(producerSpan, `linked span ${link.traceID}/${link.spanID}`).toBeDefined();
    expect(produced?.processes[producerSpan.processID]?.serviceName).toBe('meterline-produce');
    expect(producerSpan.operationName).toBe(`send ${tp.topics.usage}`);
    expect(tagValue(producerSpan, ATTR.messagingDestination)).toBe(tp.topics.usage);
    expect(tenants).toContain(tagValue(producerSpan, ATTR.customer));

    // The processor's log line for this hour names the same trace.
    const lines = readFileSync(processorLog, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const finalized = lines.filter((l) => l.msg === 'hour finalized and emitted');
    expect(finalized.map((l) => l.trace_id)).toContain(t.traceID);

    // `meterline trace` finds and draws the record's trace, with its AWS call (followed through the link
    // when the call is a child of another record's consume span) and the producers behind the links.
    const shown =
      submissions.find((r) => parentOf(callOf(r.recordId)) !== consumeOf(r.recordId).spanID) ?? record;
    const out = join(tmpdir(), `${uniqueId('trace-cli')}.json`);
    const cli = spawnMeterline(
      ['trace', shown.recordId, '--json'],
      { METERLINE_JAEGER_URL: jaeger.baseUrl },
      out,
    );
    expect(((await once(cli, 'exit')) as [number | null])[0]).toBe(0);
    const view = JSON.parse(readFileSync(out, 'utf8')) as {
      traceId: string;
      spans: {
        name: string;
        service: string;
        depth: number;
        attributes: Record<string, unknown>;
        events?: { name: string; attributes: Record<string, unknown> }[];
      }[];
      producers: { service: string; name: string }[];
    };
    expect(view.traceId).toBe(consumeOf(shown.recordId).traceID);
    expect(view.spans.map((s) => [s.depth, s.service, s.name])).toEqual(
      expect.arrayContaining([
        [0, 'meterline-processor', `finalize ${tp.topics.usage}`],
        [1, 'meterline-worker', `process ${tp.topics.submissions}`],
        [2, 'meterline-worker', 'MarketplaceMetering.BatchMeterUsage'],
      ]),
    );
    const drawnCall = view.spans.find((s) => s.name === 'MarketplaceMetering.BatchMeterUsage');
    // Only the shown record's detail from the call.
    expect(drawnCall?.events?.map((e) => e.attributes[ATTR.recordId])).toEqual([shown.recordId]);
    expect(drawnCall?.events?.[0]?.attributes[ATTR.awsStatus]).toBe('Success');
    expect(view.producers.length).toBeGreaterThan(0);
    expect(view.producers.every((p) => p.service === 'meterline-produce')).toBe(true);
  }, 300_000);
});

function dedupe(spans: JaegerSpan[]): JaegerSpan[] {
  return [...new Map(spans.map((s) => [s.spanID, s])).values()];
}

/** The call span's per-record events (Jaeger shows span events as logs). */
function recordEvents(s: JaegerSpan): JaegerLog[] {
  return (s.logs ?? []).filter((l) => fieldOf(l, 'event') === AWS_RECORD_EVENT);
}

function fieldOf(l: JaegerLog, key: string): string | number | boolean | undefined {
  return l.fields.find((f) => f.key === key)?.value;
}

function recordsInCalls(calls: JaegerSpan[]): string[] {
  return calls.flatMap((s) => recordEvents(s).map((e) => String(fieldOf(e, ATTR.recordId))));
}

function spanNames(t: JaegerTrace | undefined): string {
  return t ? t.spans.map((s) => s.operationName).join(', ') : 'not found yet';
}
