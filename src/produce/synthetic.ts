/**
 * Seeded synthetic usage: the same seed gives the same events, so demos, tests and benchmarks can compare
 * what was produced with what was billed.
 */
import { HOUR_MS, hourStart } from '../time/hours.ts';

export interface RawEvent {
  id: string;
  customer: string;
  dimension: string;
  quantity: number;
  timestamp: string | number;
  tags?: Record<string, string>;
}

export interface SyntheticOptions {
  count: number;
  customers: readonly string[];
  dimensions: readonly string[];
  /** Event times fall in the `hours` whole UTC hours before the current one. */
  hours: number;
  nowMs: number;
  /** Share of events sent a second time with the same id. */
  duplicateRate?: number;
  seed?: number;
  maxQuantity?: number;
  idPrefix?: string;
}

/** mulberry32: tiny, fast and good enough to make test data. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function* syntheticEvents(o: SyntheticOptions): Generator<RawEvent> {
  const random = seededRandom(o.seed ?? 42);
  const first = hourStart(o.nowMs) - o.hours * HOUR_MS;
  const span = o.hours * HOUR_MS;
  const maxQ = o.maxQuantity ?? 10;
  const prefix = o.idPrefix ?? `evt-${o.seed ?? 42}`;
  for (let i = 0; i < o.count; i++) {
    const event: RawEvent = {
      id: `${prefix}-${i}`,
      customer: o.customers[Math.floor(random() * o.customers.length)] as string,
      dimension: o.dimensions[Math.floor(random() * o.dimensions.length)] as string,
      quantity: 1 + Math.floor(random() * maxQ),
      timestamp: new Date(first + Math.floor(random() * span)).toISOString(),
    };
    yield event;
    if (o.duplicateRate && random() < o.duplicateRate) yield { ...event };
  }
}
