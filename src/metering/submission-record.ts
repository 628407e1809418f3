/**
 * A frozen record on the submission topic: one per (product, customer, dimension, hour). Its id is
 * deterministic, so any re-emission after a crash carries the same id and the same quantity.
 */

import { hourIso } from '../time/hours.ts';
import type { Allocation } from './allocations.ts';
import type { MeteringApi } from './aws-window.ts';
import { acceptanceDeadline } from './aws-window.ts';

export interface SubmissionRecord {
  version: 1;
  recordId: string;
  productCode: string;
  /** The seller's tenant id; the worker maps it to AWS identifiers. */
  customer: string;
  dimension: string;
  /** Start of the UTC hour: the record's AWS Timestamp. */
  hour: string;
  quantity: number;
  /** How the quantity splits over allocation tag sets (sums to `quantity`); absent when untagged. */
  allocations?: Allocation[];
  api: MeteringApi;
  /** The last instant AWS accepts this record. */
  deadline: string;
  finalizedAt: string;
  /** W3C context of the finalize span; the worker's spans are its children (also sent as a header). */
  traceparent?: string;
}

export function recordId(productCode: string, customer: string, dimension: string, hourMs: number): string {
  return `${productCode}|${customer}|${dimension}|${hourIso(hourMs)}`;
}

export function makeSubmissionRecord(input: {
  productCode: string;
  customer: string;
  dimension: string;
  hourMs: number;
  quantity: number;
  allocations?: Allocation[] | undefined;
  api: MeteringApi;
  finalizedAtMs: number;
  traceparent?: string | undefined;
}): SubmissionRecord {
  return {
    version: 1,
    recordId: recordId(input.productCode, input.customer, input.dimension, input.hourMs),
    productCode: input.productCode,
    customer: input.customer,
    dimension: input.dimension,
    hour: hourIso(input.hourMs),
    quantity: input.quantity,
    ...(input.allocations ? { allocations: input.allocations } : {}),
    api: input.api,
    deadline: new Date(acceptanceDeadline(input.api, input.hourMs)).toISOString(),
    finalizedAt: new Date(input.finalizedAtMs).toISOString(),
    ...(input.traceparent ? { traceparent: input.traceparent } : {}),
  };
}

export function parseSubmissionRecord(value: Buffer | null): SubmissionRecord | undefined {
  if (!value) return undefined;
  try {
    const r = JSON.parse(value.toString('utf8')) as Partial<SubmissionRecord>;
    if (
      r.version === 1 &&
      typeof r.recordId === 'string' &&
      typeof r.customer === 'string' &&
      typeof r.dimension === 'string' &&
      typeof r.hour === 'string' &&
      Number.isInteger(r.quantity) &&
      typeof r.productCode === 'string' &&
      (r.allocations === undefined ||
        (Array.isArray(r.allocations) &&
          r.allocations.reduce((sum, a) => sum + (a?.quantity ?? Number.NaN), 0) === r.quantity))
    ) {
      return r as SubmissionRecord;
    }
  } catch {
    // fall through: the caller dead-letters what it cannot read
  }
  return undefined;
}
