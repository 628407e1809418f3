/** A reconciled row (one customer, dimension and hour), its status and the reason codes it can carry. */

export type RowStatus = 'balanced' | 'pending' | 'unbalanced';

export interface ReconcileRow {
  customer: string;
  dimension: string;
  hour: string;
  recordId: string;
  /** Units measured in the hour itself (events by event time), when the usage topic was read. */
  measured?: number;
  /** Units of late events of this hour carried into a later hour (known when measured). */
  carriedOut?: number;
  /** Units of late events of earlier hours carried into this one. */
  carriedIn?: number;
  /** Late events carried out of / into this hour (from the audit trail). */
  lateEventsOut: number;
  lateEventsIn: number;
  /** Fraction (hourly sums) carried from the previous hour, and to the next, in units. */
  remainderIn?: number;
  remainderOut?: number;
  /** Whole units held back (AWS's per-record cap, a closed period) after this hour. */
  held?: number;
  frozen?: number;
  emitted?: number;
  accepted?: number;
  deadLettered?: number;
  redriven?: number;
  status: RowStatus;
  reasons: string[];
  /** What explains a balanced row that a source cannot show (`ledger_lost_with_redis`). */
  notes?: string[];
}

export const REASONS = {
  carriedOut: 'carried_out',
  carriedIn: 'carried_in',
  frozenDiffers: 'frozen_differs_from_measured',
  measuredNotFrozen: 'measured_not_frozen',
  notFrozenByDeadline: 'not_frozen_by_deadline',
  notEmitted: 'not_emitted',
  emittedMissing: 'emitted_record_missing',
  emittedDiffers: 'emitted_quantity_differs',
  conflictingEmits: 'conflicting_emits',
  acceptedDiffers: 'accepted_quantity_differs',
  acceptedWithoutFrozen: 'accepted_without_frozen_record',
  missingFromLedger: 'missing_from_ledger',
  deadlineMissed: 'deadline_missed',
  redrivenNotAccepted: 'redriven_not_accepted',
  /** `dead_lettered:<reason code>` */
  deadLettered: 'dead_lettered',
  // pending
  open: 'open',
  awaitingEmit: 'awaiting_emit',
  awaitingWorker: 'awaiting_worker',
  redriven: 'redriven',
} as const;

export const NOTES = {
  /** Accepted per the worker group's offsets; the ledger entry was lost with Redis's state. */
  ledgerLost: 'ledger_lost_with_redis',
} as const;
