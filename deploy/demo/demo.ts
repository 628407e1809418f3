/**
 * `npm run demo`: starts the local stack, produces a realistic stream (four customers, three dimensions,
 * the last three closed UTC hours, resent duplicates and a few bad events), runs the whole pipeline,
 * waits until every closed hour is accepted by the emulator, and prints what was produced, submitted,
 * accepted and dead-lettered. Exits non-zero on any discrepancy.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { startPipeline } from '../../src/app/pipeline.ts';
import { findTrace, renderTrace, traceView } from '../../src/cli/trace-command.ts';
import { loadConfig } from '../../src/config/config.ts';
import { awsCustomerId, loadCustomers } from '../../src/config/customers.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ensureTopics, pipelineTopics } from '../../src/kafka/topics.ts';
import { createLogger } from '../../src/log.ts';
import type { FailedRecord } from '../../src/metering/dlq-envelope.ts';
import type { SubmissionRecord } from '../../src/metering/submission-record.ts';
import { JaegerClient } from '../../src/observability/jaeger-client.ts';
import { shutdownTracing } from '../../src/observability/tracing.ts';
import { eventMessage, type Outgoing, produceMessages } from '../../src/produce/producer.ts';
import { type RawEvent, seededRandom } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourIso, hourStart } from '../../src/time/hours.ts';
import { ensureServices, ensureStack, OTLP_ENV, tracingWanted } from '../stack/index.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const PLAN = here('./plan.json');
const CUSTOMERS = here('./customers.json');
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];
const HOURS = 3;
const TIMEOUT_MS = 180_000;

interface Row {
  hour: string;
  customer: string;
  dimension: string;
  events: number;
  expected: number;
  submitted?: number;
  accepted?: number;
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Usage that looks like a SaaS product's: bursts of API calls, a storage level, a few jobs. */
function demoStream(nowMs: number, runId: string): { events: RawEvent[]; resent: RawEvent[] } {
  const random = seededRandom(Number.parseInt(runId.slice(0, 6), 16));
  const firstHour = hourStart(nowMs) - HOURS * HOUR_MS;
  const events: RawEvent[] = [];
  let n = 0;
  const id = () => `${runId}-${n++}`;
  for (let h = 0; h < HOURS; h++) {
    const hour = firstHour + h * HOUR_MS;
    for (const customer of TENANTS) {
      const weight = 1 + TENANTS.indexOf(customer);
      const at = () => {
        const t = new Date(hour + Math.floor(random() * HOUR_MS));
        // Producers in several time zones: the same instants, written with different offsets.
        return random() < 0.3
          ? t.toISOString().replace('Z', '+00:00')
          : random() < 0.5
            ? t.getTime()
            : t.toISOString();
      };
      for (let i = 0; i < 300 * weight; i++) {
        events.push({
          id: id(),
          customer,
          dimension: 'api_calls',
          quantity: 1 + Math.floor(random() * 5),
          timestamp: at(),
        });
      }
      for (let i = 0; i < 12; i++) {
        const gb = Math.round((20 * weight + random() * 30) * 10) / 10;
        events.push({ id: id(), customer, dimension: 'storage_gb', quantity: gb, timestamp: at() });
      }
      for (let i = 0; i < 2 + Math.floor(random() * 4); i++) {
        events.push({ id: id(), customer, dimension: 'jobs', quantity: 1, timestamp: at() });
      }
    }
  }
  // Real traffic arrives roughly in event-time order, customers interleaved, with some jitter.
  // Sorting on event time plus up to 30 s of noise bounds the disorder at 30 s.
  const sendOrder = new Map(events.map((e) => [e, eventTime(e) + random() * 30_000]));
  events.sort((x, y) => (sendOrder.get(x) as number) - (sendOrder.get(y) as number));
  const resent = events.filter(() => random() < 0.02).map((e) => ({ ...e }));
  return { events, resent };
}

function eventTime(e: RawEvent): number {
  return typeof e.timestamp === 'number' ? e.timestamp : Date.parse(e.timestamp);
}

function badEvents(nowMs: number): { key: string; value: string | Buffer | null; reason: string }[] {
  const ok = {
    id: 'bad',
    customer: 'acme',
    dimension: 'api_calls',
    quantity: 1,
    timestamp: new Date(nowMs - HOUR_MS).toISOString(),
  };
  return [
    { key: 'acme', value: '{"id":"oops","customer":"acme",', reason: 'malformed_json' },
    {
      key: 'acme',
      value: JSON.stringify({ ...ok, id: 'bad-naive', timestamp: '2026-01-01T10:00:00' }),
      reason: 'timestamp_without_zone',
    },
    {
      key: 'acme',
      value: JSON.stringify({ ...ok, id: 'bad-future', timestamp: nowMs + 3 * HOUR_MS }),
      reason: 'future_timestamp',
    },
    {
      key: 'acme',
      value: JSON.stringify({ ...ok, id: 'bad-old', timestamp: nowMs - 4 * 24 * HOUR_MS }),
      reason: 'too_old',
    },
    {
      key: 'acme',
      value: JSON.stringify({ ...ok, id: 'bad-neg', quantity: -3 }),
      reason: 'negative_quantity',
    },
    {
      key: 'acme',
      value: JSON.stringify({ ...ok, id: 'bad-dim', dimension: 'gpu_hours' }),
      reason: 'unknown_dimension',
    },
    { key: 'acme', value: JSON.stringify({ id: 'bad-shape', customer: 'acme' }), reason: 'schema_violation' },
    { key: 'acme', value: Buffer.alloc(0), reason: 'empty_message' },
  ];
}

function expectedRows(events: RawEvent[], maxDimensions: Set<string>): Map<string, Row> {
  const rows = new Map<string, Row>();
  const seen = new Set<string>();
  const peaks = new Map<string, number>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const ms = typeof e.timestamp === 'number' ? e.timestamp : Date.parse(e.timestamp);
    const hour = hourIso(hourStart(ms));
    const key = `${hour}|${e.customer}|${e.dimension}`;
    const row = rows.get(key) ?? {
      hour,
      customer: e.customer,
      dimension: e.dimension,
      events: 0,
      expected: 0,
    };
    row.events += 1;
    if (maxDimensions.has(e.dimension)) {
      peaks.set(key, Math.max(peaks.get(key) ?? 0, e.quantity));
      row.expected = Math.ceil(peaks.get(key) as number);
    } else {
      row.expected += e.quantity;
    }
    rows.set(key, row);
  }
  return rows;
}

async function main(): Promise<number> {
  say(
    'meterline demo: usage events → hourly windows in Redis → commit stage → metering worker → AWS Metering (emulator)\n',
  );
  const traced = tracingWanted();
  say(
    `1. Starting the local stack (Kafka 4.4, Redis, Metering emulator${traced ? ', Jaeger' : ''})…` +
      (traced
        ? '\n   (the first run builds Jaeger from the Go module proxy: about 9 minutes on 2 cores)'
        : ''),
  );
  const [stack, jaegerEnv] = await Promise.all([
    ensureStack(),
    traced ? ensureServices(['jaeger']).then((r) => r.env) : undefined,
  ]);
  const jaegerUrl = jaegerEnv?.METERLINE_JAEGER_URL;
  if (jaegerEnv?.[OTLP_ENV]) {
    // Spans from this process (producer, processor, commit stage, worker) go to the stack's Jaeger.
    process.env[OTLP_ENV] = jaegerEnv[OTLP_ENV];
    process.env.OTEL_SERVICE_NAME ??= 'meterline-demo';
    process.env.OTEL_BSP_SCHEDULE_DELAY ??= '500';
    await import('../../src/observability/otel-preload.ts');
  }
  const runId = randomBytes(4).toString('hex');
  const env = {
    ...process.env,
    KAFKA_BROKERS: stack.KAFKA_BROKERS,
    REDIS_URL: stack.REDIS_URL,
    AWS_ENDPOINT_URL_MARKETPLACE_METERING: stack.AWS_ENDPOINT_URL_MARKETPLACE_METERING,
    AWS_REGION: process.env.AWS_REGION ?? 'us-east-1',
    // The emulator ignores signatures; the SDK still wants credentials to sign with.
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'demo',
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'demo',
    METERLINE_PLAN: PLAN,
    METERLINE_CUSTOMERS: CUSTOMERS,
    METERLINE_TOPIC_USAGE: `demo-${runId}.usage-events`,
    METERLINE_TOPIC_SUBMISSIONS: `demo-${runId}.metering-submissions`,
    METERLINE_TOPIC_FAILED: `demo-${runId}.metering-failed`,
    METERLINE_TOPIC_CHANGELOG: `demo-${runId}.window-changelog`,
    METERLINE_REDIS_PREFIX: `meterline-demo-${runId}`,
    METERLINE_PROCESSOR_GROUP: `demo-${runId}-processor`,
    METERLINE_WORKER_GROUP: `demo-${runId}-worker`,
    METERLINE_WINDOW_GRACE: '5s',
    // The demo backfills the last three hours: let the watermark, not the wall-clock bound, close them.
    METERLINE_WINDOW_MAX_DELAY: '12h',
    // Out-of-orderness covers the jitter above; the last closed hour closes once the stream is idle.
    METERLINE_MAX_OUT_OF_ORDERNESS: '2m',
    METERLINE_IDLE_TIMEOUT: '3s',
    METERLINE_COMMIT_INTERVAL: '1s',
    // Any free port for /metrics: a meterline already running here keeps 9464.
    METERLINE_OPS_PORT: process.env.METERLINE_OPS_PORT ?? '0',
  };
  Object.assign(process.env, env);
  const config = loadConfig(['processor', 'worker'], env);
  const logger = createLogger('meterline-demo', process.env.LOG_LEVEL ?? 'warn');
  const kafka = createKafka({ brokers: config.kafka.brokers, clientId: 'meterline-demo', logger });
  const emulatorUrl = stack.AWS_ENDPOINT_URL_MARKETPLACE_METERING;
  // The local emulator remembers earlier demo runs' hours; start from a clean slate.
  await fetch(new URL('/_emulator/reset', emulatorUrl), { method: 'POST' });

  const nowMs = Date.now();
  const { events, resent } = demoStream(nowMs, runId);
  const bad = badEvents(nowMs);
  const maxDims = new Set(
    [...config.plan.dimensions.values()].filter((d) => d.aggregation === 'max').map((d) => d.name),
  );
  const expected = expectedRows([...events, ...resent], maxDims);
  const firstHour = hourIso(hourStart(nowMs) - HOURS * HOUR_MS);
  say(
    `2. Producing ${events.length} events for ${TENANTS.length} customers over the ${HOURS} closed hours since ${firstHour},`,
  );
  say(
    `   ${resent.length} of them resent with the same id, and ${bad.length} bad events, to ${config.topics.usage}…`,
  );
  await ensureTopics(kafka, pipelineTopics(config.topics));
  const messages: Outgoing[] = [
    ...events.map(eventMessage),
    ...bad.map((b) => ({ key: b.key, value: b.value })),
  ];
  await produceMessages(messages, { kafka, topic: config.topics.usage });
  await produceMessages(resent.map(eventMessage), { kafka, topic: config.topics.usage });

  say('3. Running the pipeline (meterline run: processor + commit stage + worker)…');
  const started = Date.now();
  const pipeline = await startPipeline(config, logger, { processor: true, worker: true });
  const tenantOf = tenantsByAwsId();
  let accepted: Map<string, number> = new Map();
  try {
    for (;;) {
      const res = (await (await fetch(new URL('/_emulator/records', emulatorUrl))).json()) as {
        records: { customer: string; dimension: string; timestamp: string; quantity: number }[];
      };
      accepted = new Map(
        res.records.map((r) => [`${r.timestamp}|${tenantOf.get(r.customer)}|${r.dimension}`, r.quantity]),
      );
      const done = [...expected.keys()].filter((k) => accepted.has(k)).length;
      process.stdout.write(
        `\r   ${done}/${expected.size} hourly records accepted by AWS Metering (emulator)…`,
      );
      if (done === expected.size) break;
      if (Date.now() - started > TIMEOUT_MS) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    process.stdout.write('\n');
  } finally {
    await pipeline.stop();
    await shutdownTracing();
  }

  const submissions = await readAll(kafka, config.topics.submissions);
  const submitted = new Map(
    submissions.map((m) => {
      const r = JSON.parse(m) as SubmissionRecord;
      return [`${r.hour}|${r.customer}|${r.dimension}`, r.quantity];
    }),
  );
  const failed = (await readAll(kafka, config.topics.failed)).map((m) => JSON.parse(m) as FailedRecord);

  const table = new Table({
    head: ['hour (UTC)', 'customer', 'dimension', 'events', 'expected', 'submitted', 'accepted', ''],
    colAligns: ['left', 'left', 'left', 'right', 'right', 'right', 'right', 'left'],
    style: { compact: true },
  });
  let problems = 0;
  for (const row of [...expected.values()].sort((a, b) =>
    `${a.hour}${a.customer}${a.dimension}`.localeCompare(`${b.hour}${b.customer}${b.dimension}`),
  )) {
    const key = `${row.hour}|${row.customer}|${row.dimension}`;
    const ok = submitted.get(key) === row.expected && accepted.get(key) === row.expected;
    if (!ok) problems += 1;
    table.push([
      row.hour,
      row.customer,
      row.dimension,
      row.events,
      row.expected,
      submitted.get(key) ?? '–',
      accepted.get(key) ?? '–',
      ok ? '✓' : '✗',
    ]);
  }
  for (const key of accepted.keys()) {
    if (!expected.has(key)) {
      problems += 1;
      table.push([
        ...key.split('|'),
        0,
        0,
        submitted.get(key) ?? '–',
        accepted.get(key) ?? '–',
        '✗ unexpected',
      ]);
    }
  }
  say(`\n${table.toString()}`);

  const dlq = new Table({
    head: ['dead-letter reason', 'stage', 'expected', 'on the failed-records topic', ''],
    style: { compact: true },
  });
  const reasons = new Map<string, number>();
  for (const b of bad) reasons.set(b.reason, (reasons.get(b.reason) ?? 0) + 1);
  const found = new Map<string, number>();
  for (const f of failed) found.set(f.reason, (found.get(f.reason) ?? 0) + 1);
  for (const reason of new Set([...reasons.keys(), ...found.keys()])) {
    const ok = reasons.get(reason) === found.get(reason);
    if (!ok) problems += 1;
    const stage = failed.find((f) => f.reason === reason)?.stage ?? 'ingest';
    dlq.push([reason, stage, reasons.get(reason) ?? 0, found.get(reason) ?? 0, ok ? '✓' : '✗']);
  }
  say(dlq.toString());

  const uniqueEvents = new Set(events.map((e) => e.id)).size;
  say(
    `\nproduced ${events.length + resent.length + bad.length} messages: ${uniqueEvents} unique events, ${resent.length} resends (counted once), ${bad.length} bad`,
  );
  say(
    `${expected.size} hourly records expected, ${submitted.size} submitted, ${[...expected.keys()].filter((k) => accepted.get(k) === expected.get(k)?.expected).length} accepted with the exact quantity`,
  );
  say(`in ${((Date.now() - started) / 1000).toFixed(1)} s from pipeline start.`);
  if (jaegerUrl) await showTrace(jaegerUrl, submissions);
  say('\nThe stack keeps running. Look around:');
  say(`  npx meterline emulator records --endpoint ${emulatorUrl}`);
  say('  npm run stack:status      npm run stack:down');
  if (problems) {
    say(`\n✗ ${problems} discrepanc${problems === 1 ? 'y' : 'ies'}: see the rows marked ✗ above.`);
    return 1;
  }
  say('\n✓ every closed hour was billed exactly once, with the exact quantity.');
  return 0;
}

/** Draws one submitted record's trace, and says how to find any other one. */
async function showTrace(jaegerUrl: string, submissions: string[]): Promise<void> {
  const record = submissions
    .map((m) => JSON.parse(m) as SubmissionRecord)
    .find((r) => r.traceparent && r.quantity > 0);
  if (!record?.traceparent) {
    say('\n(no traced submission found: was OTEL_TRACES_SAMPLER set to sample nothing?)');
    return;
  }
  const traceId = record.traceparent.split('-')[1] as string;
  const jaeger = new JaegerClient(jaegerUrl);
  // Spans were flushed when the pipeline stopped; Jaeger stores them within moments.
  let trace: Awaited<ReturnType<typeof findTrace>>;
  for (let i = 0; i < 40; i++) {
    trace = await findTrace(jaeger, traceId);
    if (trace?.spans.some((sp) => /MeterUsage$/.test(sp.operationName))) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  say(`\nThe trace of one record, ${record.recordId}, from Jaeger:\n`);
  if (trace) say(renderTrace(await traceView(jaeger, trace, 3, record.recordId)));
  else say('   (not in Jaeger yet: try the command below in a moment)');
  say('Find it again, or any other record:');
  say(`  METERLINE_JAEGER_URL=${jaegerUrl} npx meterline trace '${record.recordId}'`);
  say(`  curl ${jaegerUrl}/api/traces/${traceId}`);
}

function tenantsByAwsId(): Map<string, string> {
  return new Map([...loadCustomers(CUSTOMERS)].map(([tenant, m]) => [awsCustomerId(m), tenant]));
}

async function readAll(kafka: ReturnType<typeof createKafka>, topic: string): Promise<string[]> {
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const total = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  const out: string[] = [];
  if (!total) return out;
  const consumer = kafka.consumer({ groupId: `demo-reader-${randomBytes(4).toString('hex')}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        out.push(String(message.value));
        if (out.length >= total) resolve();
      },
    });
  });
  await consumer.disconnect();
  return out;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(
      `demo failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
