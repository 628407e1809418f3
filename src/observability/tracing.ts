/**
 * Tracing helpers over the OpenTelemetry API. The SDK itself is started before the app by
 * `node --import ./src/observability/otel-preload.ts`; without it every call here is a cheap no-op.
 *
 * Context crosses Kafka as a W3C `traceparent` header: producer → usage topic → processor batch (links)
 * → finalize span (links to a sample of the hour's events) → submission record → worker → AWS call.
 */
import {
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';

export { context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace };

const SHUTDOWN = Symbol.for('meterline.otel.shutdown');

export function tracer(): Tracer {
  return trace.getTracer('meterline');
}

/** Whether an SDK is recording spans in this process (the preload started one). */
export function tracingActive(): boolean {
  return typeof (globalThis as Record<symbol, unknown>)[SHUTDOWN] === 'function';
}

/** Flushes and stops the SDK the preload started (a no-op without one). */
export async function shutdownTracing(): Promise<void> {
  const stop = (globalThis as Record<symbol, unknown>)[SHUTDOWN] as (() => Promise<void>) | undefined;
  if (stop) await stop().catch(() => undefined);
}

/** The preload registers its shutdown here, so the app can flush without importing the SDK. */
export function registerTracingShutdown(stop: () => Promise<void>): void {
  (globalThis as Record<symbol, unknown>)[SHUTDOWN] = stop;
}

/** The W3C traceparent of a span (undefined when the span is not sampled or tracing is off). */
export function traceparentOf(span: Span | undefined): string | undefined {
  if (!span) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier);
  return carrier.traceparent;
}

/** Writes the span's context into Kafka headers (only when it is sampled). */
export function injectHeaders(span: Span, headers: Record<string, string>): Record<string, string> {
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), headers);
  return headers;
}

/** A context whose parent is the remote span named by `traceparent` (ROOT when absent or malformed). */
export function contextFromTraceparent(traceparent: string | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}

/** A span link to the remote span named by `traceparent`, if it parses. */
export function linkFromTraceparent(traceparent: string | undefined): Link | undefined {
  const sc = trace.getSpanContext(contextFromTraceparent(traceparent));
  return sc && trace.isSpanContextValid(sc) ? { context: sc } : undefined;
}

/** Reads `traceparent` from kafkajs headers (Buffer or string values). */
export function headerTraceparent(headers: Record<string, unknown> | undefined): string | undefined {
  const v = headers?.traceparent;
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (Array.isArray(v) && v.length) return headerTraceparent({ traceparent: v[0] });
  return undefined;
}

/** At most `max` distinct links from traceparents (a batch of thousands must not make thousands of links). */
export function boundedLinks(traceparents: Iterable<string | undefined>, max: number): Link[] {
  const links: Link[] = [];
  const seen = new Set<string>();
  for (const tp of traceparents) {
    if (links.length >= max) break;
    if (!tp || seen.has(tp)) continue;
    seen.add(tp);
    const link = linkFromTraceparent(tp);
    if (link) links.push(link);
  }
  return links;
}

/** Runs `fn` in a new active span; records an exception and ERROR status if it throws. */
export async function inSpan<T>(
  name: string,
  options: SpanOptions,
  parent: Context,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer().startActiveSpan(name, options, parent, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

export function failSpan(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/** The active span's ids, for log lines (empty outside a recording span). */
export function activeTraceIds(): { trace_id?: string; span_id?: string } {
  const sc = trace.getSpan(context.active())?.spanContext();
  if (!sc || !trace.isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}
