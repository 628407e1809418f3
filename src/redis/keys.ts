/**
 * Every Redis key meterline uses is built here. Per-partition state carries one hash tag, so each Lua
 * script touches a single slot and works on Redis Cluster.
 */
export interface PartitionRef {
  topic: string;
  partition: number;
}

/** The field that names one aggregate inside an hour: customer, dimension (and tag set), joined by a unit separator. */
export const FIELD_SEPARATOR = '\u001f';

export interface AggregateKey {
  customer: string;
  dimension: string;
  /** The allocation tag set, when the events carried tags. */
  tags?: Record<string, string>;
}

/** Canonical form of a tag set: sorted entries, so {a,b} and {b,a} are one allocation. */
function tagsKey(tags: Record<string, string>): string {
  return JSON.stringify(Object.entries(tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export function aggregateField(customer: string, dimension: string, tags?: Record<string, string>): string {
  return tags
    ? `${customer}${FIELD_SEPARATOR}${dimension}${FIELD_SEPARATOR}${tagsKey(tags)}`
    : `${customer}${FIELD_SEPARATOR}${dimension}`;
}

/** The customer␟dimension part of an aggregate field (drops the tag set). */
export function baseField(field: string): string {
  const i = field.indexOf(FIELD_SEPARATOR);
  const j = i < 0 ? -1 : field.indexOf(FIELD_SEPARATOR, i + 1);
  return j < 0 ? field : field.slice(0, j);
}

export function splitAggregateField(field: string): AggregateKey | undefined {
  const i = field.indexOf(FIELD_SEPARATOR);
  if (i < 0) return undefined;
  const j = field.indexOf(FIELD_SEPARATOR, i + 1);
  if (j < 0) return { customer: field.slice(0, i), dimension: field.slice(i + 1) };
  return {
    customer: field.slice(0, i),
    dimension: field.slice(i + 1, j),
    tags: Object.fromEntries(JSON.parse(field.slice(j + 1)) as [string, string][]),
  };
}

/**
 * What an early close (the final flush) covers: a whole tenant (a customers-file tenant), or one product
 * subscription of it (a registered buyer leaving product A keeps B's hour on its schedule).
 */
export function cutScope(customer: string, productCode?: string): string {
  return productCode === undefined ? customer : `${customer}${FIELD_SEPARATOR}${productCode}`;
}

/**
 * The scopes an aggregate field can have been cut under: its tenant's, and its tenant's for the product
 * of its dimension (`productOf`, from the plan).
 */
export function cutScopesOf(
  field: string,
  productOf: (dimension: string) => string | undefined,
): [whole: string, product: string | undefined] {
  const i = field.indexOf(FIELD_SEPARATOR);
  if (i < 0) return [field, undefined];
  const j = field.indexOf(FIELD_SEPARATOR, i + 1);
  const customer = field.slice(0, i);
  const product = productOf(field.slice(i + 1, j < 0 ? undefined : j));
  return [customer, product === undefined ? undefined : cutScope(customer, product)];
}

/** The field of one tenant's entitlements for one product, in `Keys.entitlements()`. */
export function entitlementField(tenant: string, productCode: string): string {
  return `${tenant}${FIELD_SEPARATOR}${productCode}`;
}

export class Keys {
  readonly prefix: string;
  constructor(prefix: string) {
    this.prefix = prefix;
  }

  partition(p: PartitionRef): PartitionKeys {
    return new PartitionKeys(`${this.prefix}:{${p.topic}/${p.partition}}`);
  }

  /** The first hour that hourly zero records are made for, on every partition of the usage topic. */
  zeroRecordsFrom(topic: string): string {
    return `${this.prefix}:zero-from:${topic}`;
  }

  /** The gap job's lease: the worker pod holding it scans the ledger for the fleet (src/reconcile/gaps.ts). */
  gapJobLease(): string {
    return `${this.prefix}:gap-job-lease`;
  }

  /** The token bucket shared by every worker for one AWS API (the quota is per account and Region). */
  rateLimit(api: string): string {
    return `${this.prefix}:rate:${api}`;
  }

  /**
   * A registration rate window: `address:<ip or /64>` or `total`. One key per call (never two in one
   * script), so no hash tag is needed on Redis Cluster.
   */
  registrationRate(scope: string): string {
    return `${this.prefix}:registration-rate:${scope}`;
  }

  /** ResolveCustomer's answer for one registration token, by the token's SHA-256 (never the token itself). */
  resolvedToken(tokenSha256: string): string {
    return `${this.prefix}:resolved:${tokenSha256}`;
  }

  /** Set when a failed-records entry was redriven, so it is sent back at most once. */
  redriven(dlqTopic: string, entryId: string): string {
    return `${this.prefix}:redriven:${dlqTopic}:${entryId}`;
  }

  /** Sorted set: customer → the start (ms) of the latest hour AWS accepted a record for. */
  lastAccepted(): string {
    return `${this.prefix}:last-accepted`;
  }

  /**
   * Version 1 of the customer directory (one entry per tenant), read only to migrate it to
   * `customerSubscriptions()` (left in place after, for a rollback). Every `{customers}` key shares one hash
   * tag, so one script reads and writes them all on Redis Cluster.
   */
  customerDirectory(): string {
    return `${this.prefix}:{customers}:directory`;
  }

  /** Version 1's index: AWS identity → tenant. */
  customerIndex(): string {
    return `${this.prefix}:{customers}:index`;
  }

  /**
   * The customer directory since version 2: one entry per product subscription, field
   * `tenant␟productCode` → entry JSON (license, status, times). `customerDirectory()` is version 1's.
   */
  customerSubscriptions(): string {
    return `${this.prefix}:{customers}:subscriptions`;
  }

  /** AWS identity (`license:<arn>`, `account:<product>:<id>`, `identifier:<product>:<id>`) → `tenant␟productCode`. */
  customerSubscriptionIndex(): string {
    return `${this.prefix}:{customers}:subscription-index`;
  }

  /** Bumped after every write to `customerSubscriptions()`: readers re-read the directory only when it moved. */
  customerDirectoryChanges(): string {
    return `${this.prefix}:{customers}:directory-changes`;
  }

  /** The directory's format: absent (version 1, one entry per tenant) or `2` (per product subscription). */
  customerDirectoryVersion(): string {
    return `${this.prefix}:{customers}:directory-version`;
  }

  /**
   * The customers file's tenants by AWS identity (the same fields as `customerIndex`), so a lifecycle event
   * finds them too. Rewritten from the file at start by the processor and by registration.
   */
  customerFileIndex(): string {
    return `${this.prefix}:{customers}:file-index`;
  }

  /** Customers-file tenant → its subscription status, as lifecycle events set it (no field: subscribed). */
  customerFileStatus(): string {
    return `${this.prefix}:{customers}:file-status`;
  }

  /**
   * What GetEntitlements last answered, per tenant and product: field `entitlementField(tenant, product)`,
   * value the dimensions' values and expiration dates and when they were fetched (src/subscribe/entitlements.ts).
   */
  entitlements(): string {
    return `${this.prefix}:{customers}:entitlements`;
  }

  /** Bumped with every write to `entitlements()`: the commit stage re-reads them only when it moved. */
  entitlementsVersion(): string {
    return `${this.prefix}:{customers}:entitlements-version`;
  }

  /** Held by the registration replica running this round of the scheduled GetEntitlements refresh. */
  entitlementsRefresh(): string {
    return `${this.prefix}:entitlements-refresh`;
  }

  /** A spent hand-off token's nonce (jti): set once, expiring with the token. */
  handoffNonce(jti: string): string {
    return `${this.prefix}:handoff:${jti}`;
  }

  /**
   * Set once an SNS Notification (by its MessageId, which SNS signs) was handled, expiring when no copy of
   * it could pass the verifier's age check any more: a delivery seen again is answered, not applied.
   */
  snsMessage(messageId: string): string {
    return `${this.prefix}:sns-handled:${messageId}`;
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
  /** Hash of open aggregates of one hour, field = customer␟dimension[␟tag set], value = micro-units. */
  aggregates(hourMs: number): string {
    return `${this.base}:agg:${hourMs}`;
  }
  /** Event ids already counted for one hour (dedupe), as kept before the packed dedupe logs. */
  seen(hourMs: number): string {
    return `${this.base}:seen:${hourMs}`;
  }
  /**
   * The dedupe log of one hour: a list with one entry per batch, the 16-byte hashes of the event ids it
   * counted (state/dedupe-index.ts), packed. `v1` names the hash: another hash needs another key.
   */
  dedupeLog(hourMs: number): string {
    return `${this.base}:ids:v1:${hourMs}`;
  }
  /** Sorted set of the hours with a dedupe log, scored by when each was last written. */
  dedupeHours(): string {
    return `${this.base}:ids:v1:hours`;
  }
  /** The frozen records of a finalized hour: field = customer␟dimension, value = quantity and allocations. */
  finalized(hourMs: number): string {
    return `${this.base}:fin:${hourMs}`;
  }
  /** Sorted set of finalized hours whose records are not yet on the submission topic. */
  pendingEmit(): string {
    return `${this.base}:emit`;
  }
  /** Metering-model state per customer␟dimension: carried remainders, held units, peaks, cumulatives. */
  modelState(): string {
    return `${this.base}:model`;
  }
  /** Customer␟dimension fields whose model state owes units to the next closed hour. */
  due(): string {
    return `${this.base}:due`;
  }
  /** The latest hour closed in sequence (zero records close every hour, with or without usage). */
  closedThrough(): string {
    return `${this.base}:closed`;
  }
  /** The partition's event time: highest event time applied, and the wall clock of that batch. */
  time(): string {
    return `${this.base}:time`;
  }
  /** Offsets below this were processed before Redis lost its state, and are being replayed. */
  replay(): string {
    return `${this.base}:replay`;
  }
  /**
   * Hash: cut scope (`cutScope`: a customer, or customer␟product) → the checkpoint its hour was closed
   * early at (the final flush after unsubscribe-pending).
   */
  cuts(hourMs: number): string {
    return `${this.base}:cuts:${hourMs}`;
  }
  /** One scope's early-closed hour: its frozen records, `__through`, `__customer` (the scope), `__states`. */
  cut(hourMs: number, scope: string): string {
    return `${this.base}:cut:${hourMs}:${scope}`;
  }
  /** Sorted set of `<hour>|<cut scope>` cuts whose records are not yet on the submission topic. */
  pendingCuts(): string {
    return `${this.base}:pending-cuts`;
  }
  /**
   * Set: fields of a frozen hour already on the submission topic (or dead-lettered) while others of it are
   * held (their tenant has no AWS identity yet).
   */
  sent(hourMs: number): string {
    return `${this.base}:sent:${hourMs}`;
  }
  /** Hash: `<hour>|<field>` → when that frozen record was first held for want of a tenant mapping (ms). */
  held(): string {
    return `${this.base}:held`;
  }
  /** No hour closes until the replay after a state loss reaches this offset (the log end back then). */
  replayHold(): string {
    return `${this.base}:replay-hold`;
  }
  /** A bounded sample of the hour's events' trace contexts: the finalize span links to them. */
  traceLinks(hourMs: number): string {
    return `${this.base}:links:${hourMs}`;
  }
  /** Audit trail of late events carried into an open hour. */
  lateAudit(): string {
    return `${this.base}:late`;
  }
}
