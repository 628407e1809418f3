/**
 * Finalizing one hour of one partition: reads its aggregates and the metering-model state at one
 * checkpoint, applies each dimension's model (metering-models.ts), splits quantities over allocation tag
 * sets, and stores the frozen records with the new model state in one script. A frozen hour never
 * changes, and a crash can never apply a model twice.
 */
import type { ContractTerms } from '../config/customers.ts';
import { type Dimension, MICROS_PER_UNIT, type Plan } from '../config/plan.ts';
import { isMeterlineError, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { type Allocation, type AllocationPart, allocate } from '../metering/allocations.ts';
import { retry } from '../metering/retry.ts';
import { metrics } from '../observability/metrics.ts';
import { baseField, cutScope, cutScopesOf, type PartitionRef, splitAggregateField } from '../redis/keys.ts';
import type { WindowStore } from '../state/window-store.ts';
import type { HourSnapshot } from '../state/window-types.ts';
import { hourIso } from '../time/hours.ts';
import {
  applyModel,
  contractPeriod,
  decodeState,
  encodeState,
  isEmptyState,
  monthOf,
} from './metering-models.ts';

/**
 * The hour's checkpoint moved between the read and the script (usage still arriving for it): read and
 * compute again, three times in all, after a short jittered wait.
 */
/** Re-reads a moved hour; a Redis behind the task is final here (only the task's replay can catch it up). */
const MOVED_RETRY = {
  attempts: 3,
  backoff: { baseMs: 10, maxMs: 100 },
  classify: (e: unknown) => (isMeterlineError(e) && e.code !== 'store_behind' ? e : undefined),
};

function moved(hourMs: number, how: 'frozen' | 'cut'): MeterlineError {
  return new MeterlineError('redis_error', `hour ${hourIso(hourMs)} kept changing while it was ${how}`, {
    retriable: true,
  });
}

export interface HourFinalizerOptions {
  plan: Plan;
  /**
   * A customer's contract, for contract-with-overage dimensions: the customers file's, or the one made
   * from its AWS entitlements (whose dimensions may expire).
   */
  contractOf: (customer: string) => ContractTerms | undefined;
  logger: Logger;
}

/** A frozen record of a finalized hour. */
export interface FrozenRecordOf extends FrozenRecord {
  customer: string;
  dimension: string;
}

export class HourFinalizer {
  readonly stats = {
    zeroRecords: 0,
    /** Units above AWS's per-record limit, held for later hours. */
    heldBackUnits: 0,
    /** Tag sets beyond AWS's allocation limit, merged into untagged usage. */
    allocationsMerged: 0,
    missingEntitlements: 0,
  };
  readonly #o: HourFinalizerOptions;
  readonly #warnedEntitlements = new Set<string>();

  constructor(options: HourFinalizerOptions) {
    this.#o = options;
  }

  /**
   * Freezes an hour (a no-op when it is frozen already): applies each dimension's model to the hour's
   * usage and stores the records with the model state in one script. `zeroFields` are the
   * customer␟dimension fields that get a record this hour even without usage. `traceparent` (the
   * finalize span) is frozen with the records, so a re-emission after a crash continues the same trace.
   * Returns how many records were frozen now.
   */
  async freeze(
    windows: WindowStore,
    p: PartitionRef,
    token: string,
    hourMs: number,
    zeroFields: readonly string[] = [],
    traceparent?: string,
    held?: bigint,
  ): Promise<number> {
    return retry(async () => {
      const snapshot = await windows.readHour(p, hourMs, zeroFields);
      if (snapshot.finalized) return 0;
      notBehind(snapshot.checkpoint, held, p);
      const { records, states } = this.#compute(hourMs, snapshot, zeroFields, traceparent);
      const res = await windows.freezeHour(p, token, hourMs, snapshot.checkpoint, records, states);
      if (res === 'moved') throw moved(hourMs, 'frozen');
      return res === 'frozen' ? records.length : 0;
    }, MOVED_RETRY);
  }

  /**
   * Closes one subscription's hour early (the final flush after unsubscribe-pending): applies the models to
   * that tenant's usage of the hour only (of one product when `productCode` is named, else all of it), and
   * stores its records and model state with the cut, in one script; the hour's own close later leaves
   * those fields out. Returns whether it was cut now ('already': the hour is frozen whole, or the scope
   * was cut before).
   */
  async cut(
    windows: WindowStore,
    p: PartitionRef,
    token: string,
    hourMs: number,
    subscription: { customer: string; productCode?: string },
    zeroFields: readonly string[] = [],
    traceparent?: string,
    held?: bigint,
  ): Promise<'cut' | 'already'> {
    const { customer, productCode } = subscription;
    const scope = cutScope(customer, productCode);
    const mine = (field: string) => {
      const key = splitAggregateField(field);
      return (
        key?.customer === customer &&
        (productCode === undefined || this.#productOf(key.dimension) === productCode)
      );
    };
    return retry(async () => {
      const snapshot = await windows.readHour(p, hourMs, zeroFields.filter(mine));
      if (snapshot.finalized || snapshot.cuts.has(scope) || snapshot.cuts.has(customer)) return 'already';
      notBehind(snapshot.checkpoint, held, p);
      // Fields an earlier cut of another scope covers stay out (#compute drops them).
      const own: HourSnapshot = {
        ...snapshot,
        aggregates: snapshot.aggregates.filter(([f]) => mine(f)),
        due: snapshot.due.filter(mine),
      };
      const { records, states } = this.#compute(hourMs, own, zeroFields.filter(mine), traceparent);
      const res = await windows.cutHour(
        p,
        token,
        hourMs,
        scope,
        snapshot.checkpoint,
        own.aggregates.map(([f]) => f),
        records,
        states,
      );
      if (res === 'moved') throw moved(hourMs, 'cut');
      return res;
    }, MOVED_RETRY);
  }

  readonly #productOf = (dimension: string) => this.#o.plan.dimensions.get(dimension)?.productCode;

  /** The frozen records of a finalized hour. */
  async frozen(windows: WindowStore, p: PartitionRef, hourMs: number): Promise<FrozenRecordOf[]> {
    return this.parse(await windows.frozenRecords(p, hourMs));
  }

  /** Frozen records as stored (field → text), parsed. */
  parse(stored: readonly [field: string, frozen: string][]): FrozenRecordOf[] {
    const out: FrozenRecordOf[] = [];
    for (const [field, text] of stored) {
      const key = splitAggregateField(field);
      if (key)
        out.push({ customer: key.customer, dimension: key.dimension, ...parseFrozen(text, this.#o.plan) });
    }
    return out;
  }

  /** Freezes an hour if needed and returns its records (tests and tools; the commit stage splits the two). */
  async finalize(
    windows: WindowStore,
    p: PartitionRef,
    token: string,
    hourMs: number,
    zeroFields: readonly string[] = [],
  ): Promise<FrozenRecordOf[]> {
    await this.freeze(windows, p, token, hourMs, zeroFields);
    return this.frozen(windows, p, hourMs);
  }

  #compute(
    hourMs: number,
    snapshot: HourSnapshot,
    zeroFields: readonly string[],
    traceparent: string | undefined,
  ): { records: [string, string][]; states: [string, string, boolean][] } {
    const usage = new Map<string, { total: bigint; max: boolean; parts: AllocationPart[] }>();
    for (const [field, micros] of snapshot.aggregates) {
      const key = splitAggregateField(field);
      if (!key) continue;
      const base = baseField(field);
      const max = this.#o.plan.dimensions.get(key.dimension)?.aggregation === 'max';
      const u = usage.get(base) ?? { total: 0n, max, parts: [] };
      u.total = max ? (micros > u.total ? micros : u.total) : u.total + micros;
      u.parts.push({ ...(key.tags ? { tags: key.tags } : {}), micros });
      usage.set(base, u);
    }
    const zero = new Set(zeroFields);
    const fields = new Set([...usage.keys(), ...zero, ...snapshot.due]);
    // Subscriptions whose hour was closed early were billed for it then: their records are in the cut.
    if (snapshot.cuts.size) {
      for (const f of fields) {
        const [whole, product] = cutScopesOf(f, this.#productOf);
        if (snapshot.cuts.has(whole) || (product !== undefined && snapshot.cuts.has(product)))
          fields.delete(f);
      }
    }
    const records: [string, string][] = [];
    const states: [string, string, boolean][] = [];
    for (const field of fields) {
      const key = splitAggregateField(field);
      if (!key) continue;
      const dimension = this.#dimension(key.dimension);
      const u = usage.get(field);
      const contract =
        dimension.model === 'contract' ? this.#contract(key.customer, dimension, hourMs) : undefined;
      const outcome = applyModel({
        hourMs,
        dimension: {
          ...dimension,
          zeroRecords: dimension.zeroRecords && zero.has(field),
        },
        usage: u?.total,
        state: decodeState(snapshot.states.get(field)),
        ...(contract ? { contract } : {}),
      });
      if (outcome.heldBack > 0n) {
        this.stats.heldBackUnits += Number(outcome.heldBack);
        metrics.heldBackUnits.inc(Number(outcome.heldBack));
        this.#o.logger.error(
          {
            customer: key.customer,
            dimension: key.dimension,
            hour: hourIso(hourMs),
            held: String(outcome.heldBack),
          },
          'quantity above the AWS limit of 2147483647: the excess is held for the next hours',
        );
      }
      if (outcome.quantity !== undefined) {
        const { allocations, merged } = allocate(outcome.quantity, u?.parts ?? []);
        if (merged) {
          this.stats.allocationsMerged += merged;
          this.#o.logger.warn(
            { customer: key.customer, dimension: key.dimension, hour: hourIso(hourMs), merged },
            'more tag sets than AWS allows in one record: the smallest are billed as untagged usage',
          );
        }
        if (!u && outcome.quantity === 0) {
          this.stats.zeroRecords += 1;
          metrics.zeroRecords.inc();
        }
        const frozen: FrozenRecord = { productCode: dimension.productCode, quantity: outcome.quantity };
        if (allocations) frozen.allocations = allocations;
        if (traceparent) frozen.traceparent = traceparent;
        records.push([field, JSON.stringify(frozen)]);
      }
      states.push([
        field,
        isEmptyState(outcome.state) ? '' : encodeState(outcome.state),
        // Units held back by the cap are owed to the next closed hour, with or without usage.
        outcome.heldBack > 0n,
      ]);
    }
    return { records, states };
  }

  #dimension(name: string): Dimension {
    const d = this.#o.plan.dimensions.get(name);
    if (d) return d;
    // Usage counted before the dimension left the plan is still billed, as plain hourly usage.
    this.#o.logger.error(
      { dimension: name },
      'dimension is no longer in the metering plan: billed as hourly',
    );
    const first = this.#o.plan.products[0]?.productCode ?? '';
    return {
      name,
      model: 'hourly',
      aggregation: 'sum',
      unit: 1,
      unitMicros: BigInt(MICROS_PER_UNIT),
      rounding: 'floor',
      zeroRecords: false,
      productCode: first,
    };
  }

  #contract(customer: string, d: Dimension, hourMs: number): { period: string; entitlementMicros: bigint } {
    const contract = this.#o.contractOf(customer);
    // An expired entitlement no longer counts: from the first hour that begins at or after its expiration
    // date the dimension has none, in periods repeating from that date, so the period it covered settles
    // with its own entitlement and the usage it covered is never billed.
    const expiresAt = contract?.expiresAtMs?.[d.name];
    const expired = expiresAt !== undefined && hourMs >= expiresAt;
    const entitlement = expired ? undefined : contract?.entitlements[d.name];
    if (expired) {
      this.stats.missingEntitlements += 1;
      if (!this.#warnedEntitlements.has(`${customer}|${d.name}|expired`)) {
        this.#warnedEntitlements.add(`${customer}|${d.name}|expired`);
        this.#o.logger.warn(
          { customer, dimension: d.name, expiredAt: new Date(expiresAt).toISOString() },
          'the contract entitlement has expired: usage from then on is billed as overage',
        );
      }
    } else if (entitlement === undefined) {
      this.stats.missingEntitlements += 1;
      if (!this.#warnedEntitlements.has(`${customer}|${d.name}`)) {
        this.#warnedEntitlements.add(`${customer}|${d.name}`);
        this.#o.logger.warn(
          { customer, dimension: d.name },
          'no contract entitlement for this customer: all usage is billed as overage',
        );
      }
    }
    return {
      period: expired
        ? contractPeriod({ start: new Date(expiresAt).toISOString(), period: 'month' }, hourMs)
        : contract
          ? contractPeriod(contract, hourMs)
          : monthOf(hourMs),
      entitlementMicros:
        (BigInt(Math.round((entitlement ?? 0) * MICROS_PER_UNIT)) * d.unitMicros) / BigInt(MICROS_PER_UNIT),
    };
  }
}

/** A frozen record as stored in the finalized hour. */
export interface FrozenRecord {
  productCode: string;
  quantity: number;
  allocations?: Allocation[];
  /** The finalize span's context: the submission message carries it to the worker. */
  traceparent?: string;
}

function parseFrozen(text: string, plan: Plan): FrozenRecord {
  // Hours frozen by the skeleton hold a bare quantity.
  if (/^\d+$/.test(text)) return { productCode: plan.products[0]?.productCode ?? '', quantity: Number(text) };
  return JSON.parse(text) as FrozenRecord;
}

/**
 * An hour is frozen from what Redis holds at the checkpoint read, and the script refuses a checkpoint
 * that moved since: so a read that is not behind what the task applied (`held`) means the freeze is not
 * either. A Redis that fell behind (a failover to a lagging replica between the commit stage's health
 * check and this read) would otherwise freeze the hour from part of its usage, and the replay would then
 * carry the rest away from it.
 */
function notBehind(checkpoint: string, held: bigint | undefined, p: PartitionRef): void {
  if (held === undefined || (checkpoint !== '' && BigInt(checkpoint) >= held)) return;
  throw new MeterlineError(
    'store_behind',
    `Redis is behind partition ${p.topic}/${p.partition}: checkpoint ${checkpoint || '(none)'}, the task had ${held}`,
    { retriable: true, context: { topic: p.topic, partition: p.partition } },
  );
}
