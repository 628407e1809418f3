/**
 * One CLIENT span per AWS Metering call, by OpenTelemetry's AWS SDK conventions: named `Service.Operation`
 * (`MarketplaceMetering.BatchMeterUsage`), with `rpc.*`, `aws.request_id` and `cloud.region`. A call
 * carries up to 25 records from as many traces, so the span is the child of the first record's consume
 * span, links to the others' (which link back to it), and holds one event per record with AWS's answer.
 */
import type { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { MeteringApi } from '../metering/aws-window.ts';
import type { SubmissionRecord } from '../metering/submission-record.ts';
import { ATTR, AWS_RECORD_EVENT } from '../observability/trace-attributes.ts';
import { failSpan, ROOT_CONTEXT, type Span, SpanKind, trace, tracer } from '../observability/tracing.ts';

/** The service and its region, as the SDK client names them (read once per worker). */
export interface AwsCallTarget {
  /** The SDK's service id without spaces ("Marketplace Metering" → MarketplaceMetering), as the conventions' JS instrumentation does. */
  service: string;
  region: string | undefined;
}

export async function awsCallTarget(client: MarketplaceMeteringClient): Promise<AwsCallTarget> {
  const config = client.config as { serviceId?: string; region?: string | (() => Promise<string>) };
  const region =
    typeof config.region === 'function' ? await config.region().catch(() => undefined) : config.region;
  return { service: (config.serviceId ?? 'Marketplace Metering').replace(/\s+/g, ''), region };
}

/** The request id AWS answered with (a response's or an error's `$metadata`). */
export function requestIdOf(answer: unknown): string | undefined {
  const id = (answer as { $metadata?: { requestId?: unknown } } | undefined)?.$metadata?.requestId;
  return typeof id === 'string' && id ? id : undefined;
}

export class AwsCallSpan {
  readonly #span: Span;

  private constructor(span: Span) {
    this.#span = span;
  }

  /**
   * Starts the call's span (undefined when none of its records has a consume span: tracing is off).
   * `consumeSpans` finds a record's consume span by its id.
   */
  static start(
    api: MeteringApi,
    target: AwsCallTarget,
    records: readonly SubmissionRecord[],
    attempt: number,
    consumeSpans: (recordId: string) => Span | undefined,
  ): AwsCallSpan | undefined {
    const consumers = records.flatMap((r) => consumeSpans(r.recordId) ?? []);
    const [parent, ...others] = consumers;
    if (!parent) return undefined;
    const span = tracer().startSpan(
      `${target.service}.${api}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          [ATTR.rpcSystem]: 'aws-api',
          [ATTR.rpcService]: target.service,
          [ATTR.rpcMethod]: api,
          ...(target.region ? { [ATTR.cloudRegion]: target.region } : {}),
          [ATTR.awsBatchSize]: records.length,
          [ATTR.awsAttempt]: attempt + 1,
        },
        links: others.map((s) => ({ context: s.spanContext() })),
      },
      trace.setSpan(ROOT_CONTEXT, parent),
    );
    // Each other record's trace reaches the call through this link (the call is in the first one's trace).
    for (const s of others) s.addLink({ context: span.spanContext() });
    return new AwsCallSpan(span);
  }

  /** One record's answer from AWS: Success, DuplicateRecord, Unprocessed, an error code, … */
  record(record: SubmissionRecord, status: string, meteringRecordId?: string): void {
    this.#span.addEvent(AWS_RECORD_EVENT, {
      [ATTR.recordId]: record.recordId,
      [ATTR.customer]: record.customer,
      [ATTR.dimension]: record.dimension,
      [ATTR.windowStart]: record.hour,
      [ATTR.awsStatus]: status,
      ...(meteringRecordId ? { [ATTR.meteringRecordId]: meteringRecordId } : {}),
    });
  }

  /** Ends a call AWS answered. */
  answered(response: unknown): void {
    const requestId = requestIdOf(response);
    if (requestId) this.#span.setAttribute(ATTR.awsRequestId, requestId);
    this.#span.end();
  }

  /** Ends a call that failed as a whole: every record gets the error's code. */
  failed(records: readonly SubmissionRecord[], code: string, error: unknown): void {
    for (const r of records) this.record(r, code);
    const requestId = requestIdOf(error);
    if (requestId) this.#span.setAttribute(ATTR.awsRequestId, requestId);
    failSpan(this.#span, error);
    this.#span.end();
  }
}
