/**
 * What the console's pages read: the same functions the CLI's `status`, `customers`, `dlq`, `trace` and
 * `reconcile internal` call, over one set of clients. Nothing here writes.
 */
import type { Kafka } from 'kafkajs';
import { customerRows } from '../cli/customers-command.ts';
import { type PipelineStatus, readStatus } from '../cli/status-command.ts';
import { findTrace, type TraceView, traceView } from '../cli/trace-command.ts';
import type { Config } from '../config/config.ts';
import { type DlqEntry, readDlqWithMarks } from '../dlq/redrive.ts';
import type { JaegerClient } from '../observability/jaeger-client.ts';
import { collectInternal } from '../reconcile/collect.ts';
import { parseRecordId, reconcileInternal } from '../reconcile/internal.ts';
import type { ReconcileRow } from '../reconcile/reconcile-rows.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory } from '../state/customer-directory.ts';
import { heldUsage } from '../state/held-records.ts';
import { Ledger, type LedgerEntry } from '../state/ledger.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';

/** The hours the overview and the customers' grids look back over. */
export const LOOKBACK_HOURS = 48;

export interface Stores {
  config: Config;
  kafka: Kafka;
  redis: ScriptedRedis;
  keys: Keys;
  jaeger: JaegerClient;
}

export function stores(config: Config, kafka: Kafka, redis: ScriptedRedis, jaeger: JaegerClient): Stores {
  return { config, kafka, redis, keys: new Keys(config.redis.prefix), jaeger };
}

/** `reconcile internal` over the hours from `fromMs` to the current one. */
export async function chainRows(s: Stores, fromMs: number, toMs?: number): Promise<ReconcileRow[]> {
  const nowMs = Date.now();
  const inputs = await collectInternal({
    ...s,
    fromMs: hourStart(fromMs),
    toMs: toMs ?? hourStart(nowMs) + HOUR_MS,
    nowMs,
    measure: false,
  });
  return reconcileInternal(inputs);
}

export interface Overview {
  status: PipelineStatus;
  /** Records (customer × dimension × hour) of the last 48 h at each step of the chain. */
  records: { closed: number; emitted: number; accepted: number; deadLettered: number; pending: number };
  /** Records held back: tenants without an AWS identity yet. */
  heldRecords: number;
  fromIso: string;
}

export async function overview(s: Stores): Promise<Overview> {
  const fromMs = hourStart(Date.now()) - LOOKBACK_HOURS * HOUR_MS;
  const [status, rows, held] = await Promise.all([
    readStatus(s.config, s.kafka, s.redis, { top: 10 }),
    chainRows(s, fromMs),
    heldUsage(s.redis, s.keys, s.config.topics.usage),
  ]);
  const count = (f: (r: ReconcileRow) => boolean) => rows.filter(f).length;
  return {
    status,
    records: {
      closed: count((r) => r.frozen !== undefined),
      emitted: count((r) => r.emitted !== undefined),
      accepted: count((r) => r.accepted !== undefined),
      deadLettered: count((r) => (r.deadLettered ?? 0) > 0),
      pending: count((r) => r.status === 'pending'),
    },
    heldRecords: held.length,
    fromIso: hourIso(fromMs),
  };
}

export interface CustomerSummary {
  tenant: string;
  status: string;
  productCode: string;
  licenseArn: string;
  awsId: string;
  lastAccepted: string;
  /** Records of the last 48 h that are unbalanced (a unit not accounted for). */
  gaps: number;
  heldRecords: number;
}

export async function customers(s: Stores): Promise<CustomerSummary[]> {
  const directory = new CustomerDirectory(s.redis, s.keys);
  const rows = customerRows(s.config.customerMap, await directory.all(), await directory.fileStatuses());
  const [last, chain, held] = await Promise.all([
    new Ledger(s.redis, s.keys).lastAcceptedOf(rows.map((r) => r.tenant)),
    chainRows(s, Date.now() - LOOKBACK_HOURS * HOUR_MS),
    heldUsage(s.redis, s.keys, s.config.topics.usage),
  ]);
  return rows.map((r, i) => {
    const at = last[i];
    return {
      tenant: r.tenant,
      status: r.status,
      productCode: r.productCode || s.config.plan.products[0]?.productCode || '',
      licenseArn: r.licenseArn,
      awsId: r.awsId,
      lastAccepted: at === undefined ? '' : hourIso(at),
      gaps: chain.filter((c) => c.customer === r.tenant && c.status === 'unbalanced').length,
      heldRecords: held.filter((h) => h.tenant === r.tenant).length,
    };
  });
}

/** One customer's records of the last 48 h, for its dimension × hour grid. */
export async function customerChain(s: Stores, tenant: string): Promise<ReconcileRow[]> {
  return (await chainRows(s, Date.now() - LOOKBACK_HOURS * HOUR_MS)).filter((r) => r.customer === tenant);
}

export interface RecordStory {
  recordId: string;
  row: ReconcileRow | undefined;
  /** AWS's answer as the ledger keeps it (accepted records only). */
  ledger: LedgerEntry | undefined;
  deadLetters: DlqEntry[];
  trace: TraceView | undefined;
  /** Why there is no trace, when Jaeger could not be asked. */
  traceError: string | undefined;
}

/** A record's whole story, by its id (product|customer|dimension|hour); undefined for a malformed id. */
export async function recordStory(s: Stores, id: string): Promise<RecordStory | undefined> {
  const parsed = parseRecordId(id);
  if (!parsed) return undefined;
  const [rows, ledger, dlq] = await Promise.all([
    chainRows(s, parsed.hourMs, parsed.hourMs + HOUR_MS),
    new Ledger(s.redis, s.keys).accepted([id]),
    readDlqWithMarks(s.kafka, s.redis, s.keys, s.config.topics.failed),
  ]);
  let trace: TraceView | undefined;
  let traceError: string | undefined;
  try {
    const found = await findTrace(s.jaeger, id);
    if (found) trace = await traceView(s.jaeger, found, 5, id);
  } catch (error) {
    traceError = (error as Error).message;
  }
  return {
    recordId: id,
    row: rows.find((r) => r.recordId === id),
    ledger: ledger.get(id),
    deadLetters: dlq.entries.filter((e) => e.envelope.record?.recordId === id),
    trace,
    traceError,
  };
}

/** The failed-records topic with the redrive marks, as `meterline dlq list` reads it. */
export function deadLetters(s: Stores): ReturnType<typeof readDlqWithMarks> {
  return readDlqWithMarks(s.kafka, s.redis, s.keys, s.config.topics.failed);
}
