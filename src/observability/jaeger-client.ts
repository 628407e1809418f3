/**
 * A small client for Jaeger's HTTP query API (v1 JSON: `/api/services`, `/api/traces`). `meterline trace`
 * and the tests read traces through it; the same API serves Jaeger's UI in a cluster.
 */
import { MeterlineError } from '../errors.ts';
import { RECORD_ID_TAG } from './trace-attributes.ts';

export interface JaegerTag {
  key: string;
  type: string;
  value: string | number | boolean;
}

export interface JaegerReference {
  refType: 'CHILD_OF' | 'FOLLOWS_FROM';
  traceID: string;
  spanID: string;
}

/** A span event, as Jaeger shows it: its name is the `event` field. */
export interface JaegerLog {
  /** Microseconds since the epoch. */
  timestamp: number;
  fields: JaegerTag[];
}

export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references: JaegerReference[];
  /** Microseconds since the epoch. */
  startTime: number;
  /** Microseconds. */
  duration: number;
  tags: JaegerTag[];
  logs?: JaegerLog[];
  processID: string;
  warnings?: string[] | null;
}

export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags?: JaegerTag[] }>;
}

export const DEFAULT_JAEGER_URL = 'http://127.0.0.1:16686';

export class JaegerClient {
  readonly baseUrl: string;
  constructor(baseUrl: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async #get<T>(pathAndQuery: string): Promise<T | undefined> {
    const url = `${this.baseUrl}${pathAndQuery}`;
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    } catch (error) {
      throw new MeterlineError(
        'tracing_unavailable',
        `cannot reach Jaeger at ${this.baseUrl}: ${String(error)}`,
        {
          retriable: true,
        },
      );
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (!res.ok) {
      throw new MeterlineError(
        'tracing_unavailable',
        `Jaeger answered ${res.status} to GET ${pathAndQuery}`,
        {
          retriable: true,
        },
      );
    }
    return (await res.json()) as T;
  }

  async services(): Promise<string[]> {
    return (await this.#get<{ data: string[] | null }>('/api/services'))?.data ?? [];
  }

  async trace(traceId: string): Promise<JaegerTrace | undefined> {
    const body = await this.#get<{ data: JaegerTrace[] }>(`/api/traces/${encodeURIComponent(traceId)}`);
    return body?.data?.[0];
  }

  /** Traces of `service` holding a span with tag `key` = `value`, newest first. */
  async search(service: string, tags: Record<string, string>, lookbackMs: number): Promise<JaegerTrace[]> {
    const q = new URLSearchParams({
      service,
      tags: JSON.stringify(tags),
      start: String((Date.now() - lookbackMs) * 1000),
      end: String((Date.now() + 60_000) * 1000),
      limit: '20',
    });
    return (await this.#get<{ data: JaegerTrace[] | null }>(`/api/traces?${q}`))?.data ?? [];
  }

  /**
   * The traces that carry a record id, over every meterline service Jaeger knows, newest first (a record
   * redriven after a failure has more than one).
   */
  async tracesOfRecord(recordId: string, lookbackMs = 7 * 24 * 3600_000): Promise<JaegerTrace[]> {
    const services = (await this.services()).filter((s) => s.startsWith('meterline'));
    const found = new Map<string, JaegerTrace>();
    for (const service of services) {
      for (const t of await this.search(service, { [RECORD_ID_TAG]: recordId }, lookbackMs)) {
        found.set(t.traceID, t);
      }
    }
    const start = (t: JaegerTrace) => Math.min(...t.spans.map((s) => s.startTime));
    return [...found.values()].sort((a, b) => start(b) - start(a));
  }
}

export function tagValue(span: JaegerSpan, key: string): string | number | boolean | undefined {
  return span.tags.find((t) => t.key === key)?.value;
}

export function isTraceId(value: string): boolean {
  return /^[0-9a-f]{16}([0-9a-f]{16})?$/i.test(value);
}
