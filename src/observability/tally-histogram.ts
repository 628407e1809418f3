/**
 * A Prometheus histogram over one label with a fixed set of values, for observations made once per event:
 * an observation is two array increments (prom-client's Histogram hashes a label object each time, a
 * visible share of the processor's CPU at 100k events/s). It exports what prom-client's Histogram does:
 * `_bucket{le}` (cumulative), `_sum` and `_count` per label value.
 */
import { type Metric, type Registry, register } from 'prom-client';

export class TallyHistogram<V extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** As prom-client's metrics name theirs (the monitoring checks read it). */
  readonly labelNames: readonly string[];
  readonly #label: string;
  readonly #values: readonly V[];
  readonly #bounds: readonly number[];
  /** Per label value: a count per bucket (the last is +Inf), not cumulative. */
  readonly #counts: Float64Array[];
  readonly #sums: Float64Array;

  constructor(o: {
    name: string;
    help: string;
    label: string;
    values: readonly V[];
    buckets: readonly number[];
    /** Where it is exported (prom-client's default registry unless given). */
    registers?: Registry[];
  }) {
    this.name = o.name;
    this.help = o.help;
    this.#label = o.label;
    this.labelNames = [o.label];
    this.#values = o.values;
    this.#bounds = [...o.buckets].sort((a, b) => a - b);
    this.#counts = o.values.map(() => new Float64Array(this.#bounds.length + 1));
    this.#sums = new Float64Array(o.values.length);
    for (const r of o.registers ?? [register]) r.registerMetric(this as unknown as Metric);
  }

  /** One observation of `value` under the label value at `index` of the constructor's `values`. */
  observe(index: number, value: number): void {
    const bounds = this.#bounds;
    let b = 0;
    while (b < bounds.length && value > (bounds[b] as number)) b++;
    const counts = this.#counts[index] as Float64Array;
    counts[b] = (counts[b] as number) + 1;
    this.#sums[index] = (this.#sums[index] as number) + value;
  }

  async get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    this.#values.forEach((v, i) => {
      const counts = this.#counts[i] as Float64Array;
      let acc = 0;
      counts.forEach((c, b) => {
        acc += c;
        const le = b < this.#bounds.length ? (this.#bounds[b] as number) : '+Inf';
        values.push({ labels: { le, [this.#label]: v }, value: acc, metricName: `${this.name}_bucket` });
      });
      values.push({
        labels: { [this.#label]: v },
        value: this.#sums[i] as number,
        metricName: `${this.name}_sum`,
      });
      values.push({ labels: { [this.#label]: v }, value: acc, metricName: `${this.name}_count` });
    });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const c of this.#counts) c.fill(0);
    this.#sums.fill(0);
  }
}
