/**
 * `reconcile internal`: accounts for every unit of one customer, dimension and hour along the whole chain,
 * from what was measured (the usage topic, or the open windows) to what was frozen, emitted, accepted by
 * AWS (the ledger), carried to another hour, held back, dead-lettered and redriven. Each row is balanced,
 * pending (still on its way, before its deadline) or unbalanced with one or more reason codes.
 *
 * A pure function over what `collect.ts` read, so each rule is tested on its own.
 */

import { applyModel, type ModelState } from '../commit/metering-models.ts';
import type { Dimension } from '../config/plan.ts';
import { acceptanceDeadline } from '../metering/aws-window.ts';
import { recordId } from '../metering/submission-record.ts';
import { hourIso } from '../time/hours.ts';
import type {
  DlqSeen,
  FrozenHourInfo,
  InternalInputs,
  LateSeen,
  ReconcileOptions,
  SubmissionSeen,
} from './internal-inputs.ts';
import { NOTES, REASONS, type ReconcileRow, type RowStatus } from './reconcile-rows.ts';

const SEP = '\u0000';
const rowKey = (customer: string, dimension: string, hourMs: number) =>
  `${customer}${SEP}${dimension}${SEP}${hourMs}`;
const fieldOf = (customer: string, dimension: string) => `${customer}\u001f${dimension}`;

interface Acc {
  customer: string;
  dimension: string;
  hourMs: number;
  measuredMicros?: bigint;
  /** Micro-units of the events that landed here (own, not carried, plus carried in), by the dimension's op. */
  landed: bigint[];
  carriedOutMicros: bigint;
  carriedInMicros: bigint;
  lateOut: number;
  lateIn: number;
  openMicros?: bigint;
}

export function reconcileInternal(inputs: InternalInputs, options: ReconcileOptions = {}): ReconcileRow[] {
  const { plan, fromMs, toMs, nowMs } = inputs;
  const inRange = (h: number) => h >= fromMs && h < toMs;
  const accs = new Map<string, Acc>();
  const acc = (customer: string, dimension: string, hourMs: number): Acc => {
    const k = rowKey(customer, dimension, hourMs);
    let a = accs.get(k);
    if (!a) {
      a = {
        customer,
        dimension,
        hourMs,
        landed: [],
        carriedOutMicros: 0n,
        carriedInMicros: 0n,
        lateOut: 0,
        lateIn: 0,
      };
      accs.set(k, a);
    }
    return a;
  };

  // Late events: the audit trail says which ids left their hour, and for which.
  const carried = new Map<string, LateSeen>();
  for (const l of inputs.late) carried.set(`${l.fromHourMs}${SEP}${l.eventId}`, l);

  // Ingest dead letters: their inputs never counted.
  const deadInputs = new Set(
    inputs.dlq.flatMap((d) =>
      d.stage === 'ingest' && d.source ? [`${d.source.partition}:${d.source.offset}`] : [],
    ),
  );

  if (inputs.usage) {
    const seen = new Set<string>();
    for (const u of inputs.usage) {
      if (!plan.dimensions.has(u.dimension)) continue;
      if (deadInputs.has(`${u.partition}:${u.offset}`)) continue;
      // The processor dedupes by id within the event's hour.
      const k = `${u.hourMs}${SEP}${u.id}`;
      if (seen.has(k)) continue;
      seen.add(k);
      const own = acc(u.customer, u.dimension, u.hourMs);
      own.measuredMicros = (own.measuredMicros ?? 0n) + u.micros;
      const late = carried.get(k);
      if (late) {
        own.carriedOutMicros += u.micros;
        const to = acc(u.customer, u.dimension, late.toHourMs);
        to.carriedInMicros += u.micros;
        to.landed.push(u.micros);
      } else {
        own.landed.push(u.micros);
      }
    }
  }
  for (const l of inputs.late) {
    acc(l.customer, l.dimension, l.fromHourMs).lateOut += 1;
    acc(l.customer, l.dimension, l.toHourMs).lateIn += 1;
  }
  for (const o of inputs.open) {
    const a = acc(o.customer, o.dimension, o.hourMs);
    a.openMicros = (a.openMicros ?? 0n) + o.micros;
  }

  // Frozen hours per partition, oldest first: each field's state before an hour is the one the last
  // earlier hour that touched it left.
  const frozenBy = new Map<string, { hour: FrozenHourInfo; quantity: number | undefined }>();
  const stateBefore = new Map<string, ModelState>();
  const stateAfter = new Map<string, ModelState>();
  const frozenHours = new Set<string>();
  const byPartition = new Map<number, FrozenHourInfo[]>();
  for (const h of inputs.frozen) {
    const list = byPartition.get(h.partition) ?? [];
    list.push(h);
    byPartition.set(h.partition, list);
  }
  for (const hours of byPartition.values()) {
    hours.sort((a, b) => a.hourMs - b.hourMs);
    const last = new Map<string, ModelState>();
    for (const h of hours) {
      frozenHours.add(`${h.partition}${SEP}${h.hourMs}`);
      for (const [field, quantity] of h.records) {
        const [customer, dimension] = field.split('\u001f') as [string, string];
        acc(customer, dimension, h.hourMs);
        frozenBy.set(rowKey(customer, dimension, h.hourMs), { hour: h, quantity });
      }
      for (const [field, state] of h.states) {
        const [customer, dimension] = field.split('\u001f') as [string, string];
        const k = rowKey(customer, dimension, h.hourMs);
        stateBefore.set(k, last.get(field) ?? {});
        stateAfter.set(k, state);
        last.set(field, state);
        if (!frozenBy.has(k)) frozenBy.set(k, { hour: h, quantity: undefined });
      }
    }
  }

  const subsById = new Map<string, SubmissionSeen[]>();
  for (const s of inputs.submissions) {
    acc(s.customer, s.dimension, s.hourMs);
    const list = subsById.get(s.recordId) ?? [];
    list.push(s);
    subsById.set(s.recordId, list);
  }
  const dlqById = new Map<string, DlqSeen[]>();
  const dlqEvents = new Map<string, DlqSeen[]>();
  for (const d of inputs.dlq) {
    if (d.record) {
      acc(d.record.customer, d.record.dimension, d.record.hourMs);
      const list = dlqById.get(d.record.recordId) ?? [];
      list.push(d);
      dlqById.set(d.record.recordId, list);
    } else if (d.event && plan.dimensions.has(d.event.dimension)) {
      const k = rowKey(d.event.customer, d.event.dimension, d.event.hourMs);
      acc(d.event.customer, d.event.dimension, d.event.hourMs);
      const list = dlqEvents.get(k) ?? [];
      list.push(d);
      dlqEvents.set(k, list);
    }
  }
  // Ledger entries of hours in range that nothing else knows about.
  for (const id of inputs.ledger.keys()) {
    const parsed = parseRecordId(id);
    if (parsed && inRange(parsed.hourMs)) acc(parsed.customer, parsed.dimension, parsed.hourMs);
  }

  const rows: ReconcileRow[] = [];
  for (const [k, a] of accs) {
    if (!inRange(a.hourMs)) continue;
    const dimension = plan.dimensions.get(a.dimension);
    const productCode = dimension?.productCode ?? plan.products[0]?.productCode ?? '';
    const id = recordId(productCode, a.customer, a.dimension, a.hourMs);
    const unit = dimension?.unitMicros ?? 1_000_000n;
    const units = (m: bigint) => Number(m) / Number(unit);
    const reasons: string[] = [];
    const pending: string[] = [];
    const row: ReconcileRow = {
      customer: a.customer,
      dimension: a.dimension,
      hour: hourIso(a.hourMs),
      recordId: id,
      lateEventsOut: a.lateOut,
      lateEventsIn: a.lateIn,
      status: 'balanced',
      reasons,
    };
    const measuring = inputs.usage !== undefined;
    if (measuring) {
      row.measured = units(a.measuredMicros ?? 0n);
      if (a.carriedOutMicros) row.carriedOut = units(a.carriedOutMicros);
      if (a.carriedInMicros) row.carriedIn = units(a.carriedInMicros);
    } else if (a.openMicros !== undefined) {
      row.measured = units(a.openMicros);
    }
    const deadlineMs = acceptanceDeadline(inputs.api, a.hourMs);
    const pastDeadline = nowMs > deadlineMs;
    const frozen = frozenBy.get(k);
    const partition = inputs.partitionOf(a.customer);
    const hourFrozen = frozen !== undefined || frozenHours.has(`${partition}${SEP}${a.hourMs}`);
    const before = stateBefore.get(k);
    const after = stateAfter.get(k);
    if (before?.carry) row.remainderIn = units(before.carry);
    if (after?.carry) row.remainderOut = units(after.carry);
    if (after?.held) row.held = Number(after.held);

    const subs = subsById.get(id) ?? [];
    // The submission topic is the durable record of what was frozen: it stands in for a changelog hour
    // that was compacted away.
    let frozenQuantity = frozen?.quantity;
    if (frozenQuantity === undefined && !hourFrozen && subs.length) frozenQuantity = subs[0]?.quantity;
    if (frozenQuantity !== undefined) row.frozen = frozenQuantity;

    // 1. Measured against frozen, through the dimension's model (contracts need their entitlement: not checked).
    if (measuring && dimension && hourFrozen && dimension.model !== 'contract') {
      const expected = expectedQuantity(dimension, a, before ?? {}, frozenQuantity !== undefined);
      if (frozenQuantity === undefined) {
        if (expected !== undefined && expected > 0) reasons.push(REASONS.measuredNotFrozen);
      } else if (expected !== frozenQuantity) {
        reasons.push(REASONS.frozenDiffers);
      }
    } else if (
      !hourFrozen &&
      frozenQuantity === undefined &&
      (a.openMicros !== undefined || a.landed.length)
    ) {
      if (pastDeadline) reasons.push(REASONS.notFrozenByDeadline);
      else pending.push(REASONS.open);
    }
    // 2. Late events carried out of or into the hour.
    if (a.lateOut) (options.carriedOk ? [] : reasons).push(REASONS.carriedOut);
    if (a.lateIn) (options.carriedOk ? [] : reasons).push(REASONS.carriedIn);
    // 3. Inputs dead-lettered at ingest, never redriven.
    let deadUnits = 0n;
    let redrivenUnits = 0n;
    for (const d of dlqEvents.get(k) ?? []) {
      if (d.redriven) redrivenUnits += d.event?.micros ?? 0n;
      else {
        deadUnits += d.event?.micros ?? 0n;
        reasons.push(`${REASONS.deadLettered}:${d.reason}`);
      }
    }
    // 4. The frozen record on its way to AWS.
    if (subs.length) {
      row.emitted = subs[0]?.quantity;
      if (new Set(subs.map((s) => s.quantity)).size > 1) reasons.push(REASONS.conflictingEmits);
      if (frozenQuantity !== undefined && subs.some((s) => s.quantity !== frozenQuantity))
        reasons.push(REASONS.emittedDiffers);
    }
    const ledger = inputs.ledger.get(id);
    if (ledger) row.accepted = ledger.quantity;
    const dead = dlqById.get(id) ?? [];
    let deadRecords = 0;
    let redrivenRecords = 0;
    for (const d of dead) {
      if (d.redriven) redrivenRecords += d.record?.quantity ?? 0;
      else deadRecords += d.record?.quantity ?? 0;
    }
    if (frozenQuantity !== undefined) {
      if (ledger) {
        if (ledger.quantity !== frozenQuantity) reasons.push(REASONS.acceptedDiffers);
      } else if (dead.some((d) => !d.redriven)) {
        for (const d of dead.filter((x) => !x.redriven)) reasons.push(`${REASONS.deadLettered}:${d.reason}`);
      } else if (dead.length) {
        (pastDeadline ? reasons : pending).push(
          pastDeadline ? REASONS.redrivenNotAccepted : REASONS.redriven,
        );
      } else if (!subs.length) {
        if (frozen?.hour.emitted) reasons.push(REASONS.emittedMissing);
        else if (pastDeadline) reasons.push(REASONS.notEmitted);
        else pending.push(REASONS.awaitingEmit);
      } else if (subs.some((s) => s.offset < (inputs.workerCommitted.get(s.partition) ?? 0n))) {
        // The worker went past the record, yet neither the ledger nor the DLQ has it. The worker commits
        // only after one of the two: when Redis lost its state after the record was emitted, the ledger
        // went with it and the worker's offsets are the evidence left.
        const lossAt = inputs.redisLossAtMs;
        if (lossAt !== undefined && subs.every((s) => s.timestampMs <= lossAt)) {
          row.notes = [NOTES.ledgerLost];
        } else reasons.push(REASONS.missingFromLedger);
      } else if (pastDeadline) {
        reasons.push(REASONS.deadlineMissed);
      } else {
        pending.push(REASONS.awaitingWorker);
      }
    } else if (ledger) {
      reasons.push(REASONS.acceptedWithoutFrozen);
    }
    const deadTotal = units(deadUnits) + deadRecords;
    const redrivenTotal = units(redrivenUnits) + redrivenRecords;
    if (deadTotal) row.deadLettered = deadTotal;
    if (redrivenTotal) row.redriven = redrivenTotal;
    if (reasons.length) row.status = 'unbalanced';
    else if (pending.length) {
      row.status = 'pending';
      reasons.push(...pending);
    }
    rows.push(row);
  }
  return rows.sort(
    (x, y) =>
      x.hour.localeCompare(y.hour) ||
      x.customer.localeCompare(y.customer) ||
      x.dimension.localeCompare(y.dimension),
  );
}

/** What the model makes of the units that landed in the hour, from the state the previous hour left. */
function expectedQuantity(
  d: Dimension,
  a: Acc,
  before: ModelState,
  recordExists: boolean,
): number | undefined {
  const usage = a.landed.length
    ? d.aggregation === 'max'
      ? // biome-ignore lint/complexity/useMathMinMax: bigint, which Math.max does not take
        a.landed.reduce((m, x) => (x > m ? x : m), 0n)
      : a.landed.reduce((s, x) => s + x, 0n)
    : undefined;
  // Zero records are made for subscribed customers only: an existing record says this one is.
  return applyModel({
    hourMs: a.hourMs,
    dimension: { ...d, zeroRecords: d.zeroRecords && recordExists },
    usage,
    state: before,
  }).quantity;
}

/** `product|customer|dimension|hourIso` back into its parts (customer ids may hold no `|`). */
export function parseRecordId(
  id: string,
): { productCode: string; customer: string; dimension: string; hourMs: number } | undefined {
  const parts = id.split('|');
  if (parts.length !== 4) return undefined;
  const [productCode, customer, dimension, hour] = parts as [string, string, string, string];
  const hourMs = Date.parse(hour);
  return Number.isFinite(hourMs) ? { productCode, customer, dimension, hourMs } : undefined;
}

export { fieldOf };

/** Counts per status, for the summary line and the exit code. */
export function summarize(
  rows: readonly ReconcileRow[],
): Record<RowStatus, number> & { reasons: Record<string, number> } {
  const out = { balanced: 0, pending: 0, unbalanced: 0, reasons: {} as Record<string, number> };
  for (const r of rows) {
    out[r.status] += 1;
    if (r.status === 'unbalanced')
      for (const reason of r.reasons) out.reasons[reason] = (out.reasons[reason] ?? 0) + 1;
  }
  return out;
}
