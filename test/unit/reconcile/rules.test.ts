/**
 * The rules of `reconcile internal`, one by one, on hand-made inputs (the pipeline tests show them on real
 * data): hourly-sum remainders carried between hours, and every reason the end-to-end tests do not seed.
 */
import { describe, expect, it } from 'vitest';
import { parsePlan } from '../../../src/config/plan.ts';
import { acceptanceDeadline } from '../../../src/metering/aws-window.ts';
import { recordId } from '../../../src/metering/submission-record.ts';
import { reconcileInternal } from '../../../src/reconcile/internal.ts';
import type { InternalInputs } from '../../../src/reconcile/internal-inputs.ts';

const H = Date.UTC(2026, 11, 1, 10);
const HOUR = 3_600_000;
const plan = parsePlan({
  productCode: 'prod-test',
  dimensions: [{ name: 'api_calls', model: 'hourly', aggregation: 'sum' }],
});
const id = (customer: string, hourMs: number) => recordId('prod-test', customer, 'api_calls', hourMs);
const F = (customer: string) => `${customer}\u001fapi_calls`;
const micros = (units: number) => BigInt(Math.round(units * 1_000_000));

function inputs(over: Partial<InternalInputs> = {}): InternalInputs {
  return {
    plan,
    api: 'BatchMeterUsage',
    fromMs: H,
    toMs: H + 3 * HOUR,
    nowMs: H + 4 * HOUR,
    frozen: [],
    open: [],
    submissions: [],
    workerCommitted: new Map(),
    ledger: new Map(),
    dlq: [],
    late: [],
    usage: [],
    partitionOf: () => 0,
    ...over,
  };
}
const usage = (customer: string, hourMs: number, units: number, n: number) => ({
  id: `${customer}-${hourMs}-${n}`,
  customer,
  dimension: 'api_calls',
  hourMs,
  micros: micros(units),
  partition: 0,
  offset: String(n),
});
const sub = (customer: string, hourMs: number, quantity: number, offset: number) => ({
  recordId: id(customer, hourMs),
  customer,
  dimension: 'api_calls',
  hourMs,
  quantity,
  deadlineMs: acceptanceDeadline('BatchMeterUsage', hourMs),
  partition: 0,
  offset: BigInt(offset),
  timestampMs: hourMs + HOUR,
});
const frozenHour = (hourMs: number, records: [string, number][], carry: Record<string, number> = {}) => ({
  partition: 0,
  hourMs,
  emitted: true,
  records: new Map(records.map(([c, q]) => [F(c), q])),
  states: new Map(records.map(([c]) => [F(c), carry[c] ? { carry: micros(carry[c]) } : {}])),
});

describe('reconcile internal rules', () => {
  it('carries an hourly sum’s fraction to the next hour and balances both', () => {
    // 2.5 units then 1.75: 2 billed with 0.5 carried, then 2 billed with 0.25 carried.
    const rows = reconcileInternal(
      inputs({
        usage: [usage('acme', H, 1.5, 1), usage('acme', H, 1, 2), usage('acme', H + HOUR, 1.75, 3)],
        frozen: [
          frozenHour(H, [['acme', 2]], { acme: 0.5 }),
          frozenHour(H + HOUR, [['acme', 2]], { acme: 0.25 }),
        ],
        submissions: [sub('acme', H, 2, 0), sub('acme', H + HOUR, 2, 1)],
        ledger: new Map([
          [id('acme', H), { quantity: 2, meteringRecordId: 'a' }],
          [id('acme', H + HOUR), { quantity: 2, meteringRecordId: 'b' }],
        ]),
        workerCommitted: new Map([[0, 2n]]),
      }),
    );
    expect(
      rows.map((r) => [r.measured, r.remainderIn, r.frozen, r.remainderOut, r.accepted, r.status]),
    ).toEqual([
      [2.5, undefined, 2, 0.5, 2, 'balanced'],
      [1.75, 0.5, 2, 0.25, 2, 'balanced'],
    ]);
  });

  it('finds a frozen quantity the events do not explain, and emitted or accepted quantities that differ', () => {
    const rows = reconcileInternal(
      inputs({
        usage: [usage('acme', H, 3, 1), usage('globex', H, 4, 2), usage('initech', H, 5, 3)],
        frozen: [
          frozenHour(H, [
            ['acme', 2],
            ['globex', 4],
            ['initech', 5],
          ]),
        ],
        submissions: [
          sub('acme', H, 2, 0),
          sub('globex', H, 4, 1),
          sub('globex', H, 6, 2),
          sub('initech', H, 5, 3),
        ],
        ledger: new Map([
          [id('acme', H), { quantity: 2, meteringRecordId: 'a' }],
          [id('globex', H), { quantity: 4, meteringRecordId: 'b' }],
          [id('initech', H), { quantity: 7, meteringRecordId: 'c' }],
        ]),
        workerCommitted: new Map([[0, 4n]]),
      }),
    );
    expect(rows.map((r) => [r.customer, r.status, r.reasons])).toEqual([
      ['acme', 'unbalanced', ['frozen_differs_from_measured']],
      ['globex', 'unbalanced', ['conflicting_emits', 'emitted_quantity_differs']],
      ['initech', 'unbalanced', ['accepted_quantity_differs']],
    ]);
  });

  it('tells records on their way (pending) from records that missed their deadline', () => {
    // Frozen, not yet on the submission topic.
    const hours = {
      frozen: [
        {
          ...frozenHour(H, [
            ['acme', 1],
            ['globex', 1],
          ]),
          emitted: false,
        },
      ],
    };
    const pending = reconcileInternal(
      inputs({ ...hours, usage: undefined, submissions: [sub('globex', H, 1, 5)], nowMs: H + 2 * HOUR }),
    );
    expect(pending.map((r) => [r.customer, r.status, r.reasons])).toEqual([
      ['acme', 'pending', ['awaiting_emit']],
      ['globex', 'pending', ['awaiting_worker']],
    ]);
    const late = reconcileInternal(
      inputs({ ...hours, usage: undefined, submissions: [sub('globex', H, 1, 5)], nowMs: H + 30 * HOUR }),
    );
    expect(late.map((r) => [r.customer, r.status, r.reasons])).toEqual([
      ['acme', 'unbalanced', ['not_emitted']],
      ['globex', 'unbalanced', ['deadline_missed']],
    ]);
  });

  it('counts an input dead-lettered at ingest against its hour until it is redriven', () => {
    const event = { id: 'e1', customer: 'acme', dimension: 'api_calls', hourMs: H, micros: micros(3) };
    const dlq = (redriven: boolean) => [
      {
        id: '0:7',
        stage: 'ingest' as const,
        reason: 'too_old',
        redriven,
        event,
        source: { topic: 'u', partition: 0, offset: '9' },
      },
    ];
    const base = {
      usage: [usage('acme', H, 2, 1), { ...usage('acme', H, 3, 9), id: 'e1' }],
      frozen: [frozenHour(H, [['acme', 2]])],
      submissions: [sub('acme', H, 2, 0)],
      ledger: new Map([[id('acme', H), { quantity: 2, meteringRecordId: 'a' }]]),
    };
    const [dead] = reconcileInternal(inputs({ ...base, dlq: dlq(false) }));
    expect([dead?.measured, dead?.deadLettered, dead?.status, dead?.reasons]).toEqual([
      2,
      3,
      'unbalanced',
      ['dead_lettered:too_old'],
    ]);
    const [redriven] = reconcileInternal(inputs({ ...base, dlq: dlq(true) }));
    expect([redriven?.redriven, redriven?.status]).toEqual([3, 'balanced']);
  });
});
