/**
 * The benchmark's seeded dataset: `messages` usage events over the last `hours` closed UTC hours, roughly in
 * time order (small jitter), keyed by customer, with a share of them resent (same id, same content) a little
 * later, like a producer retry. The same seed and clock hour give the same bytes.
 */
import { seededRandom } from '../../src/produce/synthetic.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';

export interface DatasetOptions {
  /** Messages to produce, duplicates included. */
  messages: number;
  customers: number;
  dimensions: readonly string[];
  hours: number;
  nowMs: number;
  /** Share of messages that resend an earlier event (same id). */
  duplicateRate: number;
  seed: number;
  /** ± jitter around the event's place in time order. */
  jitterMs?: number;
  maxQuantity?: number;
}

export interface OutMessage {
  key: string;
  value: string;
}

/** What a correct consumer must end with; accumulated while the messages are generated. */
export interface Expected {
  messages: number;
  unique: number;
  duplicates: number;
  /** Sum of quantities in micro-units over unique events (what meterline, which dedupes, must hold). */
  uniqueMicros: number;
  /** The same over every message (what a consumer without dedupe holds). */
  allMicros: number;
  /** Distinct (customer, dimension, hour) aggregates. */
  aggregates: number;
  firstHourMs: number;
  hours: number;
  valueBytes: number;
  idBytes: number;
}

const MICROS = 1_000_000;
const RECENT = 2_000;

export function customerName(i: number): string {
  return `cust-${String(i).padStart(4, '0')}`;
}

export class Dataset {
  readonly expected: Expected;
  readonly #o: Required<DatasetOptions>;

  constructor(options: DatasetOptions) {
    this.#o = { jitterMs: 30_000, maxQuantity: 10, ...options };
    this.expected = {
      messages: 0,
      unique: 0,
      duplicates: 0,
      uniqueMicros: 0,
      allMicros: 0,
      aggregates: 0,
      firstHourMs: hourStart(options.nowMs) - options.hours * HOUR_MS,
      hours: options.hours,
      valueBytes: 0,
      idBytes: 0,
    };
  }

  /** Yields the messages in chunks of `chunk`; `expected` is complete once the generator is done. */
  *chunks(chunk: number): Generator<OutMessage[]> {
    const o = this.#o;
    const random = seededRandom(o.seed);
    const first = this.expected.firstHourMs;
    const span = o.hours * HOUR_MS;
    const customers = Array.from({ length: o.customers }, (_, i) => customerName(i));
    const aggregates = new Set<string>();
    const recent: { value: string; key: string; micros: number }[] = [];
    const exp = this.expected;
    let out: OutMessage[] = [];
    for (let i = 0; i < o.messages; i++) {
      if (recent.length > 0 && random() < o.duplicateRate) {
        const again = recent[Math.floor(random() * recent.length)] as (typeof recent)[number];
        out.push({ key: again.key, value: again.value });
        exp.duplicates += 1;
        exp.allMicros += again.micros;
        exp.valueBytes += again.value.length;
      } else {
        const customer = customers[Math.floor(random() * customers.length)] as string;
        const dimension = o.dimensions[Math.floor(random() * o.dimensions.length)] as string;
        const quantity = 1 + Math.floor(random() * o.maxQuantity);
        const base = first + Math.floor((i * span) / o.messages);
        const jitter = Math.round((random() * 2 - 1) * o.jitterMs);
        const ts = Math.min(first + span - 1, Math.max(first, base + jitter));
        const id = `b${o.seed}-${String(exp.unique).padStart(9, '0')}`;
        const value = JSON.stringify({
          id,
          customer,
          dimension,
          quantity,
          timestamp: new Date(ts).toISOString(),
        });
        const micros = quantity * MICROS;
        out.push({ key: customer, value });
        if (recent.length < RECENT) recent.push({ value, key: customer, micros });
        else recent[exp.unique % RECENT] = { value, key: customer, micros };
        aggregates.add(`${hourStart(ts)}|${customer}|${dimension}`);
        exp.unique += 1;
        exp.uniqueMicros += micros;
        exp.allMicros += micros;
        exp.valueBytes += value.length;
        exp.idBytes += id.length;
      }
      exp.messages += 1;
      if (out.length >= chunk) {
        yield out;
        out = [];
      }
    }
    if (out.length) yield out;
    exp.aggregates = aggregates.size;
  }
}
