/**
 * Container products: one MeterUsage call per record, with a ClientToken derived from the record id, so
 * a resend after a crash is idempotent and a changed quantity is refused (DuplicateRequestException).
 */
import { createHash } from 'node:crypto';
import { MeterUsageCommand, type UsageAllocation } from '@aws-sdk/client-marketplace-metering';
import type { MeterlineError } from '../errors.ts';
import type { Allocation } from '../metering/allocations.ts';
import { classifyAwsError } from '../metering/aws-errors.ts';
import type { ErrorNote } from '../metering/dlq-envelope.ts';
import type { SubmissionRecord } from '../metering/submission-record.ts';
import { errorNote } from '../metering/submit-envelopes.ts';
import { metrics } from '../observability/metrics.ts';
import type { AwsCallSpan } from './aws-call-span.ts';
import { type CallContext, Resend, timed } from './call-context.ts';

/** Bills one record of a container product, retrying while its deadline allows; resolves once it is accepted or dead-lettered. */
export async function meterUsage(ctx: CallContext, record: SubmissionRecord): Promise<void> {
  let pending = [record];
  let first: ErrorNote | undefined;
  const records = { get: () => pending, keep: (kept: readonly SubmissionRecord[]) => (pending = [...kept]) };
  await ctx.withRetries(records, async (attempt) => {
    if (!pending.length) return; // dead-lettered at its deadline
    let failure: MeterlineError;
    let span: AwsCallSpan | undefined;
    try {
      await ctx.acquire();
      span = await ctx.callSpan('MeterUsage', [record], attempt - 1);
      const out = await timed('MeterUsage', () =>
        ctx.o.client.send(
          new MeterUsageCommand({
            ProductCode: record.productCode,
            Timestamp: new Date(record.hour),
            UsageDimension: record.dimension,
            UsageQuantity: record.quantity,
            ClientToken: clientToken(record.recordId),
            ...(record.allocations?.length ? { UsageAllocations: usageAllocations(record.allocations) } : {}),
          }),
        ),
      );
      await ctx.o.ledger.record([
        {
          recordId: record.recordId,
          entry: {
            meteringRecordId: out.MeteringRecordId ?? '',
            quantity: record.quantity,
            acceptedAt: new Date(ctx.now()).toISOString(),
          },
          customer: record.customer,
          hourMs: Date.parse(record.hour),
        },
      ]);
      ctx.stats.accepted += 1;
      metrics.recordsAccepted.inc({ api: 'MeterUsage' });
      span?.record(record, 'Success', out.MeteringRecordId ?? '');
      span?.answered(out);
      span = undefined;
      ctx.outcome(record.recordId, 'accepted');
      return;
    } catch (error) {
      failure = classifyAwsError(error);
      span?.failed([record], failure.code, error);
      if (ctx.stopping.signal.aborted) throw error;
      await ctx.throttled(failure);
    }
    if (!failure.retriable) {
      await ctx.deadLetter([record], failure.code, failure.message, attempt, first);
      return;
    }
    first ??= errorNote(failure, ctx.now());
    throw new Resend(failure, first);
  });
}

/** MeterUsage's idempotency token (at most 64 characters): the same record always sends the same one. */
export function clientToken(recordId: string): string {
  return createHash('sha256').update(recordId).digest('hex');
}

/** A record's allocations (tags and their quantities) as AWS takes them, in either call form. */
export function usageAllocations(allocations: readonly Allocation[]): UsageAllocation[] {
  return allocations.map((a) => ({
    AllocatedUsageQuantity: a.quantity,
    ...(a.tags ? { Tags: Object.entries(a.tags).map(([Key, Value]) => ({ Key, Value })) } : {}),
  }));
}
