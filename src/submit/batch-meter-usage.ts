/**
 * SaaS products: BatchMeterUsage calls of up to 25 records, each with its retries while the records'
 * deadlines allow, narrowing a whole-call rejection down to the records that caused it, and the records'
 * results written to the ledger (or dead-lettered when AWS gave a final answer).
 */
import {
  BatchMeterUsageCommand,
  type BatchMeterUsageCommandOutput,
  type UsageRecord,
  type UsageRecordResult,
} from '@aws-sdk/client-marketplace-metering';
import type { CustomerMapping } from '../config/customers.ts';
import type { MeterlineError } from '../errors.ts';
import { classifyAwsError, mayBeCausedByRecords } from '../metering/aws-errors.ts';
import { isWithinAcceptanceWindow } from '../metering/aws-window.ts';
import type { ErrorNote } from '../metering/dlq-envelope.ts';
import type { SubmissionRecord } from '../metering/submission-record.ts';
import { errorNote } from '../metering/submit-envelopes.ts';
import { metrics } from '../observability/metrics.ts';
import type { AwsCallSpan } from './aws-call-span.ts';
import { type CallContext, Resend, timed } from './call-context.ts';
import { usageAllocations } from './meter-usage.ts';
/** A record ready for BatchMeterUsage: its tenant's AWS identity and the usage record AWS is sent. */
export interface Prepared {
  record: SubmissionRecord;
  mapping: CustomerMapping;
  usage: UsageRecord;
  matchKey: string;
}

/** One BatchMeterUsage call and its retries. `earlier`: the records' first failure, when a caller saw one. */
export async function submitBatchCall(
  ctx: CallContext,
  call: Prepared[],
  earlier?: ErrorNote,
): Promise<void> {
  let pending = call;
  let first = earlier;
  const records = {
    get: () => pending.map((p) => p.record),
    keep: (kept: readonly SubmissionRecord[]) => (pending = pending.filter((p) => kept.includes(p.record))),
  };
  await ctx.withRetries(records, async (attempt) => {
    // A final answer that names the culprits (records outside AWS's window) resends the rest at once.
    while (pending.length) {
      const productCode = pending[0]?.record.productCode;
      let failure: MeterlineError | undefined;
      try {
        await ctx.acquire();
        const sent = pending.map((p) => p.record);
        const span = await ctx.callSpan('BatchMeterUsage', sent, attempt - 1);
        let out: BatchMeterUsageCommandOutput;
        try {
          out = await timed('BatchMeterUsage', () =>
            ctx.o.client.send(
              new BatchMeterUsageCommand({
                ProductCode: productCode,
                UsageRecords: pending.map((p) => p.usage),
              }),
            ),
          );
        } catch (error) {
          span?.failed(sent, classifyAwsError(error).code, error);
          throw error;
        }
        try {
          pending = await handleResults(ctx, pending, out.Results ?? [], out.UnprocessedRecords ?? [], span);
        } finally {
          span?.answered(out);
        }
        if (!pending.length) return;
        failure = undefined;
      } catch (error) {
        if (ctx.stopping.signal.aborted) throw error;
        failure = classifyAwsError(error);
        await ctx.throttled(failure);
      }

      if (failure && !failure.retriable) {
        if (failure.code === 'timestamp_out_of_bounds') {
          // Our clock names most culprits: dead-letter the records outside the window, resend the rest.
          const now = ctx.now();
          const out = pending.filter(
            (p) => !isWithinAcceptanceWindow(p.record.api, Date.parse(p.record.hour), now),
          );
          if (out.length) {
            await ctx.deadLetter(
              out.map((p) => p.record),
              'timestamp_out_of_bounds',
              failure.message,
            );
            pending = pending.filter((p) => !out.includes(p));
            continue;
          }
        }
        // AWS rejects the whole call for one record's fault: find the records that caused it.
        if (pending.length > 1 && mayBeCausedByRecords(failure)) {
          await narrow(ctx, pending, failure, first);
          return;
        }
        await ctx.deadLetter(
          pending.map((p) => p.record),
          failure.code,
          failure.message,
          attempt,
          first,
        );
        return;
      }

      // Retriable: a thrown transient error, or UnprocessedRecords.
      first ??= errorNote(failure, ctx.now());
      throw new Resend(failure, first);
    }
  });
}

/**
 * Narrows a whole-call rejection down to the records that caused it. A rejected call records nothing,
 * so its records can be resent in parts. Bisection rather than one call per record: k bad records
 * among n cost about 2k·log2(n/k) calls (about 10 for 1 in 25) instead of n, and every call spends the
 * fleet's shared 10 TPS quota. Each part goes through submitBatchCall, so it takes its token from the
 * shared rate limiter and keeps its own retries and deadline; a part of one record gets AWS's final answer.
 */
async function narrow(
  ctx: CallContext,
  pending: Prepared[],
  failure: MeterlineError,
  first: ErrorNote | undefined,
): Promise<void> {
  const note = first ?? errorNote(failure, ctx.now());
  const half = Math.ceil(pending.length / 2);
  for (const part of [pending.slice(0, half), pending.slice(half)]) {
    await submitBatchCall(ctx, part, note);
    await ctx.heartbeat();
  }
}

/** Records results; returns the records AWS left unprocessed. */
async function handleResults(
  ctx: CallContext,
  sent: Prepared[],
  results: UsageRecordResult[],
  unprocessed: UsageRecord[],
  span?: AwsCallSpan,
): Promise<Prepared[]> {
  const byKey = new Map(sent.map((p) => [p.matchKey, p]));
  const accepted: {
    recordId: string;
    entry: { meteringRecordId: string; quantity: number; acceptedAt: string };
    customer: string;
    hourMs: number;
  }[] = [];
  const acceptedAt = new Date(ctx.now()).toISOString();
  const answered = new Set<Prepared>();
  for (const r of results) {
    const p = r.UsageRecord && byKey.get(matchKeyOf(r.UsageRecord));
    if (!p) {
      ctx.o.logger.error({ result: r }, 'AWS returned a result for a record that was not sent');
      continue;
    }
    answered.add(p);
    span?.record(p.record, r.Status ?? 'unknown', r.MeteringRecordId);
    if (r.Status === 'Success') {
      ctx.outcome(p.record.recordId, 'accepted');
      accepted.push({
        recordId: p.record.recordId,
        entry: { meteringRecordId: r.MeteringRecordId ?? '', quantity: p.record.quantity, acceptedAt },
        customer: p.record.customer,
        hourMs: Date.parse(p.record.hour),
      });
    } else if (r.Status === 'DuplicateRecord') {
      ctx.o.logger.error({ recordId: p.record.recordId }, 'AWS holds a conflicting record for this hour');
      await ctx.deadLetter(
        [p.record],
        'duplicate_record',
        'AWS already has a record with a different quantity',
      );
    } else {
      await ctx.deadLetter([p.record], 'customer_not_subscribed', `AWS status ${r.Status}`);
    }
  }
  await ctx.o.ledger.record(accepted);
  ctx.stats.accepted += accepted.length;
  metrics.recordsAccepted.inc({ api: 'BatchMeterUsage' }, accepted.length);
  const retry = unprocessed.flatMap((u) => byKey.get(matchKeyOf(u)) ?? []);
  // A record AWS neither answered nor listed as unprocessed is retried too: never assume success.
  for (const p of sent) if (!answered.has(p) && !retry.includes(p)) retry.push(p);
  for (const p of retry) span?.record(p.record, 'Unprocessed');
  return retry;
}

export function prepare(record: SubmissionRecord, mapping: CustomerMapping): Prepared {
  const usage: UsageRecord = {
    Timestamp: new Date(record.hour),
    Dimension: record.dimension,
    Quantity: record.quantity,
  };
  if (record.allocations?.length) usage.UsageAllocations = usageAllocations(record.allocations);
  if ('customerAwsAccountId' in mapping) {
    usage.CustomerAWSAccountId = mapping.customerAwsAccountId;
    usage.LicenseArn = mapping.licenseArn;
  } else {
    usage.CustomerIdentifier = mapping.customerIdentifier;
  }
  return { record, mapping, usage, matchKey: matchKeyOf(usage) };
}

/** How AWS's answer names a sent record: customer, dimension and hour (to the second). */
function matchKeyOf(u: UsageRecord): string {
  const customer = u.CustomerAWSAccountId ?? u.CustomerIdentifier ?? '';
  return `${customer}|${u.Dimension}|${u.Timestamp ? Math.floor(u.Timestamp.getTime() / 1000) : ''}`;
}
