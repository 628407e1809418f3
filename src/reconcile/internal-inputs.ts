/** What `reconcile internal` reads (collected by collect.ts): frozen hours, submissions, dead letters, late events, usage. */

import type { ModelState } from '../commit/metering-models.ts';
import type { Plan } from '../config/plan.ts';
import type { MeteringApi } from '../metering/aws-window.ts';

/** A frozen hour of one usage partition (from the window changelog). */
export interface FrozenHourInfo {
  partition: number;
  hourMs: number;
  emitted: boolean;
  /** customer␟dimension → frozen quantity. */
  records: Map<string, number>;
  /** customer␟dimension → model state the hour left (empty state when none). */
  states: Map<string, ModelState>;
}

export interface SubmissionSeen {
  recordId: string;
  customer: string;
  dimension: string;
  hourMs: number;
  quantity: number;
  deadlineMs: number;
  partition: number;
  offset: bigint;
  /** The message's Kafka timestamp (when it was emitted). */
  timestampMs: number;
}

export interface DlqSeen {
  id: string;
  stage: 'ingest' | 'commit' | 'submit';
  reason: string;
  redriven: boolean;
  /** stage commit/submit: the frozen record. */
  record?: { recordId: string; customer: string; dimension: string; hourMs: number; quantity: number };
  /** stage ingest: the event, when its original bytes are a readable event. */
  event?: { id: string; customer: string; dimension: string; hourMs: number; micros: bigint };
  /** Where the failed input came from (stage ingest). */
  source?: { topic: string; partition: number; offset: string };
}

export interface LateSeen {
  eventId: string;
  customer: string;
  dimension: string;
  fromHourMs: number;
  toHourMs: number;
}

export interface UsageSeen {
  id: string;
  customer: string;
  dimension: string;
  hourMs: number;
  micros: bigint;
  partition: number;
  offset: string;
}

export interface InternalInputs {
  plan: Plan;
  api: MeteringApi;
  fromMs: number;
  /** Exclusive. */
  toMs: number;
  nowMs: number;
  frozen: FrozenHourInfo[];
  /** Open (not yet frozen) aggregates in Redis: customer␟dimension, hour, micro-units. */
  open: { customer: string; dimension: string; hourMs: number; micros: bigint }[];
  submissions: SubmissionSeen[];
  /** Per partition of the submission topic, the worker group's committed offset (the next to read). */
  workerCommitted: Map<number, bigint>;
  ledger: Map<string, { quantity: number; meteringRecordId: string }>;
  dlq: DlqSeen[];
  late: LateSeen[];
  /** The usage topic, re-read (`--measure`); undefined when not read. */
  usage?: UsageSeen[];
  /** Customer → its usage partition. */
  partitionOf: (customer: string) => number;
  /**
   * When Redis last lost the pipeline's state (a recovery's replay marks), if within their 7 days: the
   * ledger went with it.
   */
  redisLossAtMs?: number;
}

export interface ReconcileOptions {
  /** Carried late units are accounted for: do not count them as an imbalance. */
  carriedOk?: boolean;
}
