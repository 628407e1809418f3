/**
 * Gap detection: for every subscribed customer and every dimension with hourly zero records, each closed
 * hour since the subscription needs a record AWS accepted (the ledger). An hour without one is a gap:
 * `missed` once its AWS deadline has passed (that revenue is lost), `late` while it still can be billed
 * but is overdue (closed at least `lateAfterMs` ago). `meterline reconcile gaps` lists them; the gap
 * monitor, run by every worker, exports their count as `meterline_billing_gaps` for the chart's alerts.
 */

import type { Config } from '../config/config.ts';
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import type { Logger } from '../log.ts';
import { acceptanceDeadline, DEFAULT_ACCEPTANCE_WINDOW_MS } from '../metering/aws-window.ts';
import { recordId } from '../metering/submission-record.ts';
import { metrics } from '../observability/metrics.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import { CustomerDirectory } from '../state/customer-directory.ts';
import { JobLease } from '../state/job-lease.ts';
import { Ledger } from '../state/ledger.ts';
import { WindowReads } from '../state/window-reads.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import { type RunningEvery, runEvery } from './run-every.ts';

export type GapState = 'missed' | 'late';

export interface GapRow {
  customer: string;
  dimension: string;
  hour: string;
  recordId: string;
  state: GapState;
  deadline: string;
}

export interface GapOptions {
  config: Config;
  redis: ScriptedRedis;
  keys: Keys;
  nowMs: number;
  /** First hour looked at (the subscription's start when later). */
  fromMs: number;
  /** A closed hour not accepted this long after its end is late. */
  lateAfterMs: number;
}

/** Subscribed customers and the hour their zero records start: the customers file, then registered ones. */
async function subscribers(
  o: GapOptions,
): Promise<{ customer: string; sinceMs: number; untilMs?: number }[]> {
  const zeroFrom = await new WindowReads(o.redis, o.keys).zeroRecordsStart(o.config.topics.usage);
  const out: { customer: string; sinceMs: number; untilMs?: number }[] = [];
  const directory = new CustomerDirectory(o.redis, o.keys);
  // File tenants follow lifecycle events too: an unsubscribed one owes its hours up to the unsubscription.
  const fileStatuses = await directory.fileStatuses();
  for (const [customer, m] of o.config.customerMap) {
    const since = m.subscribedAt ? Date.parse(m.subscribedAt) : zeroFrom;
    if (since === undefined) continue;
    const status = fileStatuses.get(customer);
    if (status?.status === 'subscribe-failed') continue;
    if (status?.status === 'unsubscribed' && status.unsubscribedAt) {
      out.push({ customer, sinceMs: hourStart(since), untilMs: Date.parse(status.unsubscribedAt) });
    } else {
      out.push({ customer, sinceMs: hourStart(since) });
    }
  }
  for (const entry of await directory.all()) {
    if (o.config.customerMap.has(entry.tenant)) continue;
    const since = hourStart(Date.parse(entry.subscribedAt));
    if (entry.status === 'subscribed' || entry.status === 'unsubscribe-pending') {
      out.push({ customer: entry.tenant, sinceMs: since });
    } else if (entry.unsubscribedAt) {
      // Its hours up to the unsubscribe were owed.
      out.push({ customer: entry.tenant, sinceMs: since, untilMs: Date.parse(entry.unsubscribedAt) });
    }
  }
  return out;
}

export async function findGaps(o: GapOptions): Promise<{ rows: GapRow[]; checked: number }> {
  const dims = [...o.config.plan.dimensions.values()].filter((d) => d.zeroRecords);
  if (!dims.length) return { rows: [], checked: 0 };
  const partitions = o.config.topics.partitions;
  const closed = await Promise.all(
    Array.from({ length: partitions }, (_, partition) =>
      new WindowReads(o.redis, o.keys).closedThrough({ topic: o.config.topics.usage, partition }),
    ),
  );
  const api = o.config.worker.api;
  const due: { customer: string; dimension: string; hourMs: number; id: string; missed: boolean }[] = [];
  for (const s of await subscribers(o)) {
    const closedThrough = closed[partitionOfCustomer(s.customer, partitions)];
    const last = hourStart(o.nowMs) - HOUR_MS;
    for (let h = Math.max(s.sinceMs, hourStart(o.fromMs)); h <= last; h += HOUR_MS) {
      if (s.untilMs !== undefined && h >= s.untilMs) break;
      const missed = o.nowMs > acceptanceDeadline(api, h);
      // An hour counts once it is closed and overdue, or once AWS no longer takes it, closed or not.
      const late =
        closedThrough !== undefined && h <= closedThrough && o.nowMs >= h + HOUR_MS + o.lateAfterMs;
      if (!missed && !late) continue;
      for (const d of dims) {
        due.push({
          customer: s.customer,
          dimension: d.name,
          hourMs: h,
          id: recordId(d.productCode, s.customer, d.name, h),
          missed,
        });
      }
    }
  }
  const ledger = new Ledger(o.redis, o.keys);
  const rows: GapRow[] = [];
  for (let i = 0; i < due.length; i += 1_000) {
    const chunk = due.slice(i, i + 1_000);
    const accepted = await ledger.accepted(chunk.map((d) => d.id));
    for (const d of chunk) {
      if (accepted.has(d.id)) continue;
      rows.push({
        customer: d.customer,
        dimension: d.dimension,
        hour: hourIso(d.hourMs),
        recordId: d.id,
        state: d.missed ? 'missed' : 'late',
        deadline: new Date(acceptanceDeadline(api, d.hourMs)).toISOString(),
      });
    }
  }
  return { rows, checked: due.length };
}

export interface GapMonitorOptions {
  config: Config;
  redis: ScriptedRedis;
  keys: Keys;
  logger: Logger;
  /** @defaultValue 5 minutes */
  intervalMs?: number;
  /** How far back each check looks. @defaultValue twice the AWS acceptance window */
  lookbackMs?: number;
  /** @defaultValue 1 hour */
  lateAfterMs?: number;
  now?: () => number;
}

/** The periodic gap job: every interval, `meterline_billing_gaps{state}` is set from `findGaps`. */
/**
 * The periodic gap job. Every worker pod runs one, but only the pod holding the lease (a Redis key with
 * its id, kept for two intervals and renewed on each check) scans the ledger: one scan per interval for the
 * fleet, not one per pod. The others export no gap series, so a former holder's stale value cannot linger;
 * when the holder stops, its lease goes with it, and if it dies, the lease lapses within two intervals.
 */
export class GapMonitor {
  readonly #o: Required<Omit<GapMonitorOptions, 'now'>> & { now: () => number };
  readonly #lease: JobLease;
  #checks: RunningEvery | undefined;

  constructor(o: GapMonitorOptions) {
    const api = o.config.worker.api;
    this.#o = {
      intervalMs: 5 * 60_000,
      lookbackMs: 2 * DEFAULT_ACCEPTANCE_WINDOW_MS[api],
      lateAfterMs: HOUR_MS,
      now: Date.now,
      ...o,
    };
    if (this.#o.intervalMs <= 0) throw new Error('intervalMs must be greater than 0');
    this.#lease = new JobLease(o.redis, o.keys.gapJobLease());
  }

  /** Checks once now, then every interval. */
  start(): void {
    this.#checks = runEvery(
      this.#o.intervalMs,
      () => this.tick(),
      (err) => this.#o.logger.warn({ err }, 'gap check failed'),
    );
  }

  async stop(): Promise<void> {
    await this.#checks?.stop();
    // Hand the job over at once rather than after the lease lapses.
    await this.#lease.release();
  }

  /** One interval's turn: the rows when this pod holds the lease and scanned, undefined when another does. */
  async tick(): Promise<GapRow[] | undefined> {
    if (await this.#lease.hold(2 * this.#o.intervalMs)) return this.check();
    metrics.billingGaps.reset();
    return undefined;
  }

  async check(): Promise<GapRow[]> {
    const nowMs = this.#o.now();
    const { rows } = await findGaps({
      config: this.#o.config,
      redis: this.#o.redis,
      keys: this.#o.keys,
      nowMs,
      fromMs: nowMs - this.#o.lookbackMs,
      lateAfterMs: this.#o.lateAfterMs,
    });
    metrics.billingGaps.set({ state: 'missed' }, rows.filter((r) => r.state === 'missed').length);
    metrics.billingGaps.set({ state: 'late' }, rows.filter((r) => r.state === 'late').length);
    if (rows.length)
      this.#o.logger.warn(
        { gaps: rows.length, first: rows[0] },
        'subscribed customers have hours without an accepted record',
      );
    return rows;
  }
}
