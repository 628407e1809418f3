/**
 * Every Redis key meterline uses is built here. Per-partition state carries one hash tag, so each Lua
 * script touches a single slot and works on Redis Cluster.
 */
export interface PartitionRef {
  topic: string;
  partition: number;
}

/** The field that names one aggregate inside an hour: customer and dimension, joined by a unit separator. */
export const FIELD_SEPARATOR = '\u001f';

export function aggregateField(customer: string, dimension: string): string {
  return `${customer}${FIELD_SEPARATOR}${dimension}`;
}

export function splitAggregateField(field: string): { customer: string; dimension: string } | undefined {
  const i = field.indexOf(FIELD_SEPARATOR);
  if (i < 0) return undefined;
  return { customer: field.slice(0, i), dimension: field.slice(i + 1) };
}

export class Keys {
  readonly prefix: string;
  constructor(prefix: string) {
    this.prefix = prefix;
  }

  partition(p: PartitionRef): PartitionKeys {
    return new PartitionKeys(`${this.prefix}:{${p.topic}/${p.partition}}`);
  }

  /** Idempotency ledger entry for one submission record. */
  ledger(recordId: string): string {
    return `${this.prefix}:ledger:${recordId}`;
  }

  /** Pattern that matches every key under this prefix (tests and `status` use it). */
  all(): string {
    return `${this.prefix}:*`;
  }
}

export class PartitionKeys {
  readonly base: string;
  constructor(base: string) {
    this.base = base;
  }
  /** Last Kafka offset applied to Redis. */
  checkpoint(): string {
    return `${this.base}:checkpoint`;
  }
  /** Fencing token, bumped on every assignment of the partition. */
  fence(): string {
    return `${this.base}:fence`;
  }
  /** Sorted set of hours that hold open aggregates. */
  openHours(): string {
    return `${this.base}:open`;
  }
  /** Hash of open aggregates of one hour, field = customer␟dimension, value = micro-units. */
  aggregates(hourMs: number): string {
    return `${this.base}:agg:${hourMs}`;
  }
  /** Event ids already counted for one hour (dedupe). */
  seen(hourMs: number): string {
    return `${this.base}:seen:${hourMs}`;
  }
  /** Frozen integer quantities of a finalized hour. */
  finalized(hourMs: number): string {
    return `${this.base}:fin:${hourMs}`;
  }
  /** Sorted set of finalized hours whose records are not yet on the submission topic. */
  pendingEmit(): string {
    return `${this.base}:emit`;
  }
  /** Fractional remainders carried to the next hour of the same customer and dimension. */
  carry(): string {
    return `${this.base}:carry`;
  }
  /** The partition's event time: highest event time applied, and the wall clock of that batch. */
  time(): string {
    return `${this.base}:time`;
  }
  /** Offsets below this were processed before Redis lost its state, and are being replayed. */
  replay(): string {
    return `${this.base}:replay`;
  }
  /** Audit trail of late events carried into an open hour. */
  lateAudit(): string {
    return `${this.base}:late`;
  }
}
