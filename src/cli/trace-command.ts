/**
 * `meterline trace <record-id | trace-id>`: fetches a submission's trace from Jaeger's HTTP API and draws
 * it in the terminal: a waterfall of spans with durations and statuses, the attributes that matter, and
 * the links from the finalize span back to the producers of the hour's events.
 *
 * One AWS call bills up to 25 records, so its span sits under one record's consume span; the others link
 * to it (possibly in another trace). The view follows those links and draws the call under each record.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { isMeterlineError } from '../errors.ts';
import {
  DEFAULT_JAEGER_URL,
  isTraceId,
  JaegerClient,
  type JaegerSpan,
  type JaegerTrace,
  tagValue,
} from '../observability/jaeger-client.ts';
import { ATTR, AWS_RECORD_EVENT } from '../observability/trace-attributes.ts';
import {
  ServiceUnavailableError,
  type TimeoutOptions,
  timeoutMs,
  type Unreachable,
  withinTimeout,
  withTimeout,
} from './one-shot.ts';
import { type OutputOptions, printData, withExamples, withOutput } from './output.ts';

/** Attributes shown under a span, in this order. */
const SHOWN = [
  ATTR.rpcService,
  ATTR.rpcMethod,
  ATTR.awsRequestId,
  ATTR.cloudRegion,
  ATTR.recordId,
  ATTR.customer,
  ATTR.dimension,
  ATTR.windowStart,
  ATTR.quantity,
  ATTR.awsStatus,
  ATTR.meteringRecordId,
  ATTR.awsBatchSize,
  ATTR.awsAttempt,
  ATTR.outcome,
  ATTR.dlqReason,
  ATTR.records,
  ATTR.eventId,
  ATTR.messagingDestination,
  ATTR.messagingPartition,
  ATTR.messagingBatchCount,
];

const BAR_WIDTH = 32;

export interface TraceView {
  traceId: string;
  spans: {
    depth: number;
    service: string;
    name: string;
    startOffsetMs: number;
    durationMs: number;
    error: boolean;
    attributes: Record<string, string | number | boolean>;
    links: { traceId: string; spanId: string }[];
    /** An AWS call's per-record answers (only the focused record's, when the view focuses on one). */
    events?: { name: string; attributes: Record<string, string | number | boolean> }[];
  }[];
  /** Records of the same finalize span left out when the view focuses on one record. */
  otherRecords: number;
  /** The producer spans the links lead to (those Jaeger still holds). */
  producers: {
    traceId: string;
    spanId: string;
    service: string;
    name: string;
    attributes: Record<string, string | number | boolean>;
  }[];
}

/** A trace id (16 or 32 hex digits) or a record id, product|customer|dimension|hour; checked before Jaeger. */
const traceOrRecordId = (v: string) => {
  if (isTraceId(v) || /^[^|\s]+\|[^|]+\|[^|\s]+\|\d{4}-\d\d-\d\dT\d\d:00:00(\.000)?Z$/.test(v)) return v;
  throw new InvalidArgumentError(
    'give a trace id (32 hex digits) or a record id, product|customer|dimension|hour such as prod-x|acme|api_calls|2026-01-01T10:00:00.000Z',
  );
};

export function registerTraceCommand(program: Command): void {
  const trace = program
    .command('trace')
    .description(
      "draw a submission's trace from Jaeger: by record id (product|customer|dimension|hour) or trace id",
    )
    .argument('<id>', 'record id (product|customer|dimension|hour) or trace id', traceOrRecordId)
    .option(
      '--jaeger <url>',
      'Jaeger query API base URL (default: METERLINE_JAEGER_URL, else 127.0.0.1:16686)',
    )
    .option('--links <n>', 'producer spans to fetch through the links (default 5)', (v) => Number(v), 5);
  withExamples(withTimeout(withOutput(trace)), [
    "meterline trace 'prod-x|acme|api_calls|2026-01-01T10:00:00.000Z'",
    'meterline trace 4bf92f3577b34da6a3ce929d0e0e4736 -o json',
  ]).action(async (id: string, o: OutputOptions & TimeoutOptions & { jaeger?: string; links: number }) => {
    const jaeger = new JaegerClient(o.jaeger ?? process.env.METERLINE_JAEGER_URL ?? DEFAULT_JAEGER_URL);
    const service: Unreachable = {
      service: 'Jaeger',
      target: jaeger.baseUrl,
      setting: o.jaeger ? '--jaeger' : 'METERLINE_JAEGER_URL',
    };
    const ms = timeoutMs(o);
    const unavailable = (error: unknown) => {
      throw isMeterlineError(error) && error.code === 'tracing_unavailable'
        ? new ServiceUnavailableError([service], ms)
        : error;
    };
    const found = await withinTimeout(ms, service, findTrace(jaeger, id)).catch(unavailable);
    if (!found) {
      process.stderr.write(
        `meterline: no trace for ${id} in Jaeger at ${jaeger.baseUrl}` +
          ' (is tracing on, OTEL_EXPORTER_OTLP_ENDPOINT set, and the record submitted?)\n',
      );
      process.exitCode = 1;
      return;
    }
    const view = await withinTimeout(
      ms,
      service,
      traceView(jaeger, found, o.links, isTraceId(id) ? undefined : id),
    ).catch(unavailable);
    printData(o, view, () => renderTrace(view));
  });
}

/** A trace id is fetched directly; anything else is searched as a record id (the newest trace wins). */
export async function findTrace(jaeger: JaegerClient, id: string): Promise<JaegerTrace | undefined> {
  if (isTraceId(id)) return jaeger.trace(id);
  // Its own trace first: the one where a span carries the record id, not only an AWS call's event for it.
  const found = await jaeger.tracesOfRecord(id);
  const newest = found.find((t) => t.spans.some((s) => tagValue(s, ATTR.recordId) === id)) ?? found[0];
  // A search answer may be partial: fetch the whole trace.
  return newest ? ((await jaeger.trace(newest.traceID)) ?? newest) : undefined;
}

/**
 * The trace as a tree. One finalize span is the parent of every record of its hour and partition; with
 * `focusRecord`, only that record's branch (and its ancestors) is kept, and the others are counted.
 */
export async function traceView(
  jaeger: JaegerClient,
  trace: JaegerTrace,
  maxLinks: number,
  focusRecord?: string,
): Promise<TraceView> {
  const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
  const parentOf = (s: JaegerSpan) =>
    s.references.find((r) => r.refType === 'CHILD_OF' && r.traceID === trace.traceID && byId.has(r.spanID))
      ?.spanID;
  const recordOf = (s: JaegerSpan) => {
    const r = tagValue(s, ATTR.recordId);
    return typeof r === 'string' ? r : undefined;
  };
  const records = new Set(trace.spans.flatMap((s) => recordOf(s) ?? []));
  const isCall = (s: JaegerSpan) => tagValue(s, ATTR.rpcSystem) === 'aws-api';
  const ancestry = (s: JaegerSpan): JaegerSpan[] => {
    const chain: JaegerSpan[] = [];
    for (let cur: JaegerSpan | undefined = s; cur; cur = byId.get(parentOf(cur) ?? '')) chain.push(cur);
    return chain;
  };
  let kept = trace.spans;
  if (focusRecord && records.has(focusRecord)) {
    const keep = new Set<string>();
    for (const s of trace.spans) {
      const chain = ancestry(s);
      if (chain.some((c) => recordOf(c) === focusRecord)) for (const c of chain) keep.add(c.spanID);
    }
    kept = trace.spans.filter((s) => keep.has(s.spanID));
  }
  const children = new Map<string | undefined, JaegerSpan[]>();
  for (const s of kept) {
    const p = parentOf(s);
    children.set(p, [...(children.get(p) ?? []), s]);
  }
  // A record's AWS call under another record's consume span, or in another trace: drawn under this
  // record's consume span too, through the link between them.
  const keptIds = new Set(kept.map((s) => s.spanID));
  const processes = new Map<string, JaegerTrace['processes']>();
  const followed = new Set<string>();
  for (const s of kept) {
    if (!recordOf(s) || isCall(s)) continue;
    for (const ref of s.references) {
      if (ref.refType !== 'FOLLOWS_FROM' || keptIds.has(ref.spanID)) continue;
      const other =
        ref.traceID === trace.traceID ? trace : await jaeger.trace(ref.traceID).catch(() => undefined);
      const call = other?.spans.find((c) => c.spanID === ref.spanID);
      if (!other || !call || !isCall(call)) continue;
      followed.add(`${ref.traceID}/${ref.spanID}`);
      processes.set(call.spanID, other.processes);
      children.set(s.spanID, [...(children.get(s.spanID) ?? []), call]);
    }
  }
  for (const list of children.values()) list.sort((a, b) => a.startTime - b.startTime);
  const t0 = Math.min(...trace.spans.map((s) => s.startTime));
  const spans: TraceView['spans'] = [];
  const producerLinks: { traceId: string; spanId: string }[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const s of children.get(parent) ?? []) {
      const links = s.references
        .filter((r) => r.refType === 'FOLLOWS_FROM' || r.traceID !== s.traceID)
        .map((r) => ({ traceId: r.traceID, spanId: r.spanID }));
      // A call's links lead to its other records' consume spans, a consume span's to its call: not producers.
      if (!isCall(s) && !recordOf(s)) producerLinks.push(...links);
      const events = callEvents(s, focusRecord && records.has(focusRecord) ? focusRecord : undefined);
      spans.push({
        depth,
        service: (processes.get(s.spanID) ?? trace.processes)[s.processID]?.serviceName ?? '?',
        name: s.operationName,
        startOffsetMs: (s.startTime - t0) / 1000,
        durationMs: s.duration / 1000,
        error: tagValue(s, 'error') === true || tagValue(s, 'otel.status_code') === 'ERROR',
        attributes: Object.fromEntries(
          SHOWN.flatMap((k) => {
            const v = tagValue(s, k);
            return v === undefined ? [] : [[k, v]];
          }),
        ),
        links,
        ...(events.length ? { events } : {}),
      });
      walk(s.spanID, depth + 1);
    }
  };
  walk(undefined, 0);
  const producers: TraceView['producers'] = [];
  const wanted = producerLinks.filter((l) => !followed.has(`${l.traceId}/${l.spanId}`)).slice(0, maxLinks);
  for (const link of wanted) {
    const linked = await jaeger.trace(link.traceId).catch(() => undefined);
    const span = linked?.spans.find((s) => s.spanID === link.spanId);
    if (!linked || !span) continue;
    producers.push({
      traceId: link.traceId,
      spanId: link.spanId,
      service: linked.processes[span.processID]?.serviceName ?? '?',
      name: span.operationName,
      attributes: Object.fromEntries(
        [ATTR.eventId, ATTR.customer, ATTR.messagingDestination, ATTR.messagingKafkaKey].flatMap((k) => {
          const v = tagValue(span, k);
          return v === undefined ? [] : [[k, v]];
        }),
      ),
    });
  }
  const shown = new Set(kept.flatMap((s) => recordOf(s) ?? []));
  return { traceId: trace.traceID, spans, otherRecords: records.size - shown.size, producers };
}

export function renderTrace(view: TraceView): string {
  const total = Math.max(1, ...view.spans.map((s) => s.startOffsetMs + s.durationMs));
  const lines = [`trace ${view.traceId}  (${view.spans.length} spans, ${fmtMs(total)})`, ''];
  const label = (s: TraceView['spans'][number]) => `${'  '.repeat(s.depth)}${s.service}: ${s.name}`;
  const width = Math.min(60, Math.max(...view.spans.map((s) => label(s).length)));
  for (const s of view.spans) {
    const from = Math.floor((s.startOffsetMs / total) * BAR_WIDTH);
    const len = Math.max(1, Math.round((s.durationMs / total) * BAR_WIDTH));
    const bar = `${' '.repeat(from)}${'█'.repeat(Math.min(len, BAR_WIDTH - from))}`.padEnd(BAR_WIDTH);
    lines.push(
      `${label(s).slice(0, width).padEnd(width)}  |${bar}|  ${fmtMs(s.durationMs).padStart(9)}  ${s.error ? 'ERROR' : 'ok'}`,
    );
    const indent = `${'  '.repeat(s.depth)}    `;
    for (const [k, v] of Object.entries(s.attributes)) lines.push(`${indent}${k} = ${v}`);
    for (const e of s.events ?? []) {
      const a = e.attributes;
      lines.push(
        `${indent}record ${a[ATTR.recordId]}: ${a[ATTR.awsStatus]}${a[ATTR.meteringRecordId] ? ` (${a[ATTR.meteringRecordId]})` : ''}`,
      );
    }
    if (s.links.length)
      lines.push(`${indent}links: ${s.links.length} linked span(s), e.g. trace ${s.links[0]?.traceId}`);
  }
  if (view.otherRecords > 0) {
    lines.push(
      '',
      `(${view.otherRecords} more record(s) of this hour and partition share the finalize span: meterline trace ${view.traceId} shows all)`,
    );
  }
  if (view.producers.length) {
    lines.push('', 'linked producer spans (a sample of the events of this hour and partition):');
    for (const p of view.producers) {
      const attrs = Object.entries(p.attributes)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      lines.push(`  ${p.service}: ${p.name}  trace ${p.traceId}  ${attrs}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** A call span's per-record events (Jaeger's logs), only `recordId`'s when given. */
function callEvents(
  span: JaegerSpan,
  recordId: string | undefined,
): NonNullable<TraceView['spans'][number]['events']> {
  return (span.logs ?? []).flatMap((log) => {
    const field = (k: string) => log.fields.find((f) => f.key === k)?.value;
    if (field('event') !== AWS_RECORD_EVENT) return [];
    if (recordId !== undefined && field(ATTR.recordId) !== recordId) return [];
    const attributes = Object.fromEntries(
      log.fields.filter((f) => f.key !== 'event').map((f) => [f.key, f.value]),
    );
    return [{ name: AWS_RECORD_EVENT, attributes }];
  });
}

function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}
