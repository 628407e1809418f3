/**
 * Rate-based fault injection: a fraction of metering calls (and GetEntitlements calls) is throttled, fails with a 5xx or times out,
 * a fraction of BatchMeterUsage records comes back unprocessed, and every call can be slowed down. A
 * seed makes the draws reproducible. The settings are validated the same way whether they come from
 * `startEmulator`, the CLI or the admin API, and every problem is listed at once.
 */
import { ConfigError } from '../errors.ts';
import { seededRandom } from '../produce/synthetic.ts';

export interface FaultSettings {
  /** Fraction of metering calls answered ThrottlingException (on top of the TPS quota). */
  throttleRate: number;
  /** Fraction of metering calls answered InternalServiceErrorException (HTTP 500). */
  errorRate: number;
  /** Fraction of metering calls never answered: held `timeoutMs`, then the connection is dropped. */
  timeoutRate: number;
  /** Fraction of valid BatchMeterUsage records returned in UnprocessedRecords. */
  unprocessedRate: number;
  /** Added to every metering call before it is answered. */
  latencyMs: number;
  /** Up to this much more latency, uniformly drawn per call. */
  latencyJitterMs: number;
  /** How long a timed-out call is held before its connection is dropped. */
  timeoutMs: number;
  /** Seeds the draws (a 32-bit unsigned integer); `null` draws from Math.random. */
  seed: number | null;
}

/** What the admin API reads and writes: the fault settings plus the TPS quota (0 = off). */
export type FaultUpdate = Partial<FaultSettings> & { tps?: number };

export const NO_FAULTS: Readonly<FaultSettings> = {
  throttleRate: 0,
  errorRate: 0,
  timeoutRate: 0,
  unprocessedRate: 0,
  latencyMs: 0,
  latencyJitterMs: 0,
  timeoutMs: 30_000,
  seed: null,
};

/** Counts of rate-based faults injected since the last reset (hook-made faults are not counted). */
export interface InjectedCounts {
  throttling: number;
  internalError: number;
  timeout: number;
  /** BatchMeterUsage records returned unprocessed. */
  unprocessedRecords: number;
  /** Calls answered late because of `latencyMs` / `latencyJitterMs`. */
  delayed: number;
}

export type InjectedFault = 'throttling' | 'internalError' | 'timeout';

const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's limit
const rate = (v: unknown) => (typeof v === 'number' && v >= 0 && v <= 1 ? undefined : 'a number from 0 to 1');
const millis = (v: unknown) =>
  typeof v === 'number' && v >= 0 && v <= MAX_TIMER_MS
    ? undefined
    : `a number of ms from 0 to ${MAX_TIMER_MS}`;

const RULES: Record<keyof FaultUpdate, (v: unknown) => string | undefined> = {
  throttleRate: rate,
  errorRate: rate,
  timeoutRate: rate,
  unprocessedRate: rate,
  latencyMs: millis,
  latencyJitterMs: millis,
  timeoutMs: (v) =>
    typeof v === 'number' && v > 0 && v <= MAX_TIMER_MS
      ? undefined
      : `a number of ms from 1 to ${MAX_TIMER_MS}`,
  seed: (v) =>
    v === null || (Number.isInteger(v) && (v as number) >= 0 && (v as number) < 2 ** 32)
      ? undefined
      : 'an integer from 0 to 4294967295, or null',
  tps: (v) =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0
      ? undefined
      : 'a non-negative number of requests per second (0 = no quota)',
};

const FAULT_UPDATE_KEYS = Object.keys(RULES) as (keyof FaultUpdate)[];
// Keys come from the admin API's body: a Map, so `constructor` or `__proto__` is just an unknown key.
const RULE_OF: ReadonlyMap<string, (v: unknown) => string | undefined> = new Map(Object.entries(RULES));

/**
 * Checks an untrusted update (admin body, CLI flags, options) against `current` and returns it typed.
 * Unknown keys are errors, so a typo never silently leaves a fault off.
 */
export function parseFaultUpdate(input: unknown, current: Readonly<FaultSettings>): FaultUpdate {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError('emulator faults', ['must be a JSON object']);
  }
  const problems: string[] = [];
  // `undefined` means "not given" (optional options), never "unset".
  const given = Object.entries(input).filter(([, value]) => value !== undefined);
  for (const [key, value] of given) {
    const rule = RULE_OF.get(key);
    if (!rule) problems.push(`${key} is not a fault setting (known: ${FAULT_UPDATE_KEYS.join(', ')})`);
    else {
      const expected = rule(value);
      if (expected) problems.push(`${key} must be ${expected} (got ${JSON.stringify(value)})`);
    }
  }
  const update = Object.fromEntries(given) as FaultUpdate;
  const next = { ...current, ...update };
  const sum = next.throttleRate + next.errorRate + next.timeoutRate;
  if (problems.length === 0 && sum > 1 + 1e-9) {
    problems.push(`throttleRate + errorRate + timeoutRate must be at most 1 (got ${+sum.toFixed(9)})`);
  }
  if (problems.length > 0) throw new ConfigError('emulator faults', problems);
  return update;
}

export class FaultInjector {
  #settings: FaultSettings = { ...NO_FAULTS };
  #random: () => number = Math.random;
  #counts = emptyCounts();

  constructor(initial: FaultUpdate = {}) {
    this.configure(initial);
  }

  get settings(): FaultSettings {
    return { ...this.#settings };
  }

  get counts(): InjectedCounts {
    return { ...this.#counts };
  }

  /** Merges a validated-here update; giving `seed` (even the same one) restarts the sequence. */
  configure(update: FaultUpdate): void {
    const { tps: _ignored, ...settings } = parseFaultUpdate(update, this.#settings);
    this.#settings = { ...this.#settings, ...settings };
    if ('seed' in settings) {
      const { seed } = this.#settings;
      this.#random = seed === null ? Math.random : seededRandom(seed);
    }
  }

  /** One draw per metering call decides its fault, so the three rates never overlap. */
  pick(): InjectedFault | undefined {
    const { throttleRate, errorRate, timeoutRate } = this.#settings;
    if (throttleRate + errorRate + timeoutRate === 0) return undefined;
    const r = this.#random();
    const fault: InjectedFault | undefined =
      r < throttleRate
        ? 'throttling'
        : r < throttleRate + errorRate
          ? 'internalError'
          : r < throttleRate + errorRate + timeoutRate
            ? 'timeout'
            : undefined;
    if (fault) this.#counts[fault] += 1;
    return fault;
  }

  /** Per BatchMeterUsage record. */
  leaveUnprocessed(): boolean {
    const { unprocessedRate } = this.#settings;
    if (unprocessedRate === 0 || this.#random() >= unprocessedRate) return false;
    this.#counts.unprocessedRecords += 1;
    return true;
  }

  /** The latency to add to this call, in ms. */
  latency(): number {
    const { latencyMs, latencyJitterMs } = this.#settings;
    const ms = latencyMs + (latencyJitterMs > 0 ? this.#random() * latencyJitterMs : 0);
    if (ms > 0) this.#counts.delayed += 1;
    return ms;
  }

  resetCounts(): void {
    this.#counts = emptyCounts();
  }
}

function emptyCounts(): InjectedCounts {
  return { throttling: 0, internalError: 0, timeout: 0, unprocessedRecords: 0, delayed: 0 };
}
