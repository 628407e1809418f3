/**
 * AWS's request quota for the Metering APIs: 10 requests per second per account, Region and API. The
 * emulator stands for one seller account in one Region, so there is one bucket per operation.
 *
 * A token bucket rather than a sliding log: a client pacing itself at exactly the quota sees its
 * requests arrive a few ms early or late, and a "≤ N in any 1 s" log would throttle about half of
 * those early ones. The bucket holds one second's worth of tokens, which absorbs that jitter, lets a
 * burst of `tps` through at once, and in steady state admits exactly `tps` per second (so a client at
 * twice the quota is throttled about half the time). Refused requests take no token.
 */

export class RequestQuota {
  #tps: number;
  readonly #clock: () => number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /** `tps` 0 turns the quota off. `clock` is monotonic milliseconds. */
  constructor(tps: number, clock: () => number = () => performance.now()) {
    this.#tps = checkTps(tps);
    this.#clock = clock;
  }

  get tps(): number {
    return this.#tps;
  }

  /** A new quota starts every bucket full again. */
  set tps(value: number) {
    this.#tps = checkTps(value);
    this.#buckets.clear();
  }

  /** Takes a token for `key`; `false` means the request is over the quota. */
  tryTake(key: string): boolean {
    if (this.#tps === 0) return true;
    const capacity = Math.max(1, this.#tps);
    const now = this.#clock();
    const bucket = this.#buckets.get(key) ?? { tokens: capacity, at: now };
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) * this.#tps) / 1000);
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Every bucket full again. */
  reset(): void {
    this.#buckets.clear();
  }
}

export function checkTps(tps: number): number {
  if (!(Number.isFinite(tps) && tps >= 0)) {
    throw new RangeError(`tps must be a non-negative number of requests per second (got ${tps})`);
  }
  return tps;
}
