/**
 * Every Prometheus metric meterline exports, defined once (prom-client's default registry). Pipelines in
 * one process share them; names follow Prometheus conventions (`_total` counters, base units).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, register } from 'prom-client';
import {
  acceptanceDeadline,
  DEFAULT_ACCEPTANCE_WINDOW_MS,
  type MeteringApi,
} from '../metering/aws-window.ts';
import { TallyHistogram } from './tally-histogram.ts';

let defaults = false;
let lastSkewSeconds: number | undefined;
const SKEW_DIRECTIONS = ['ahead', 'behind'] as const;
/** Indexes of SKEW_DIRECTIONS, for TallyHistogram.observe. */
const AHEAD = 0;
const BEHIND = 1;
/**
 * Process metrics (CPU, memory, event-loop lag), registered once per process. Unprefixed, under their
 * standard names (`process_cpu_seconds_total`, `nodejs_*`), so the usual dashboards and rules find them;
 * the scrape's job and pod labels tell the processes apart.
 */
export function collectProcessMetrics(): void {
  if (defaults) return;
  defaults = true;
  collectDefaultMetrics();
}

export const metrics = {
  events: new Counter({
    name: 'meterline_events_total',
    help: 'Usage events by what became of them: applied, duplicate (a resent id), carried_late, forwarded (to their customer partition), untagged (tags AWS would refuse), dead_lettered',
    labelNames: ['result'] as const,
  }),
  /** Alert on any `duplicate_record` or `deadline_exceeded`: revenue AWS will not pay. */
  deadLetters: new Counter({
    name: 'meterline_dead_letters_total',
    help: 'Records sent to the failed-records topic, by stage and reason code',
    labelNames: ['stage', 'reason'] as const,
  }),
  /** Alert on any `lost` or `behind`: Redis lost acknowledged state, and a replay from Kafka is running. */
  stateRecoveries: new Counter({
    name: 'meterline_state_recoveries_total',
    help: "Processor partitions recovered from Redis's state: lost (Redis lost it; replayed from Kafka), behind (an older checkpoint or fence: failover, restore; replayed from it), reply_lost (Redis had applied a batch whose reply was lost)",
    labelNames: ['kind'] as const,
  }),
  awsCalls: new Counter({
    name: 'meterline_aws_calls_total',
    help: 'AWS Metering calls, by API and outcome (ok, or the error code)',
    labelNames: ['api', 'outcome'] as const,
  }),
  awsCallDurationSeconds: new Histogram({
    name: 'meterline_aws_call_duration_seconds',
    help: 'Latency of AWS Metering calls',
    labelNames: ['api'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  }),
  recordsAccepted: new Counter({
    name: 'meterline_records_accepted_total',
    help: 'Records AWS accepted (written to the ledger)',
    labelNames: ['api'] as const,
  }),
  rateLimiterWaitSeconds: new Counter({
    name: 'meterline_rate_limiter_wait_seconds_total',
    help: 'Time workers waited for the shared AWS quota',
  }),
  rateLimiterThrottled: new Counter({
    name: 'meterline_rate_limiter_throttled_total',
    help: 'ThrottlingException answers that slowed the shared rate down',
  }),
  heldBackUnits: new Counter({
    name: 'meterline_held_back_units_total',
    help: 'Units above AWS’s per-record limit, held for the next closed hours',
  }),
  /**
   * How old the oldest hour not yet at AWS is, where this process sees it: an open (not yet frozen) hour
   * in the processor, a record still being retried in the worker. Alert well before its deadline.
   */
  oldestUnsubmittedHourSeconds: new Gauge({
    name: 'meterline_oldest_unsubmitted_hour_age_seconds',
    help: 'Age of the start of the oldest hour not yet accepted by AWS, as seen by this process (stage label); 0 when none',
    labelNames: ['stage'] as const,
  }),
  oldestUnsubmittedDeadlineSeconds: new Gauge({
    name: 'meterline_oldest_unsubmitted_deadline_seconds',
    help: 'Seconds left until the AWS deadline of that oldest hour (negative: missed)',
    labelNames: ['stage'] as const,
  }),
  /**
   * Frozen hours whose records are not on the submission topic yet. Emits take milliseconds: an hour that
   * stays here means the topic cannot be written. It is kept (it does not expire) and dead-lettered
   * (emit_failed) once its AWS deadline minus the submit margin is reached.
   */
  pendingEmitHours: new Gauge({
    name: 'meterline_pending_emit_hours',
    help: 'Frozen hours whose records could not be put on the submission topic yet, per partition of the usage topic (this instance)',
    labelNames: ['partition'] as const,
  }),
  oldestPendingEmitHourAgeSeconds: new Gauge({
    name: 'meterline_oldest_pending_emit_hour_age_seconds',
    help: 'Age of the start of the oldest frozen hour still waiting for its emit on this instance; 0 when none',
  }),
  /** Frozen records waiting for their tenant's AWS identity (registration, the customers file). */
  heldRecords: new Gauge({
    name: 'meterline_held_records',
    help: 'Frozen records held because their tenant has no AWS identity yet, per partition of the usage topic (this instance)',
    labelNames: ['partition'] as const,
  }),
  heldDeadLetterInSeconds: new Gauge({
    name: 'meterline_held_dead_letter_in_seconds',
    help: 'Time until the oldest held record of this instance is dead-lettered (its AWS deadline minus the submit margin); absent when none is held',
  }),
  dedupeIds: new Gauge({
    name: 'meterline_dedupe_ids',
    help: "Event id hashes this processor's dedupe index holds, in memory (the budget METERLINE_DEDUPE_MEMORY_IDS) or spilled to local disk",
    labelNames: ['where'] as const,
  }),
  dedupeFilterBytes: new Gauge({
    name: 'meterline_dedupe_filter_bytes',
    help: "Bytes in memory for this processor's spilled dedupe ids (filters and block indexes): about 2 per spilled id of the hours being written, none for idle hours",
  }),
  dedupeSpillFailures: new Counter({
    name: 'meterline_dedupe_spill_failures_total',
    help: 'Spills of dedupe ids to local disk that failed (full or unwritable METERLINE_DEDUPE_SPILL_DIR): the index keeps them in memory instead',
  }),
  processorLag: new Gauge({
    name: 'meterline_processor_lag_messages',
    help: 'Usage messages not yet applied to Redis, per partition of the usage topic',
    labelNames: ['partition'] as const,
  }),
  finalizeLagSeconds: new Histogram({
    name: 'meterline_finalize_lag_seconds',
    help: 'From the end of an hour to its records being on the submission topic',
    buckets: [60, 300, 600, 1800, 3600, 7200, 10800, 21600, 43200, 86400],
  }),
  zeroRecords: new Counter({
    name: 'meterline_zero_records_total',
    help: 'Hourly zero records made for subscribed customers without usage',
  }),
  /** The last event's skew, signed: what a producer's clock says now. Read at scrape time. */
  clockSkewSeconds: new Gauge({
    name: 'meterline_clock_skew_seconds',
    help: 'Event time minus the broker timestamp of its message, for the last event applied (negative: the event is older than its write; large positive: the producer clock runs ahead)',
    collect() {
      if (lastSkewSeconds !== undefined) this.set(lastSkewSeconds);
    },
  }),
  /**
   * Every event's skew as an absolute value, by direction: a histogram's buckets and `_sum` only grow, so
   * the sign lives in the label. Alert on `ahead` above a minute.
   */
  clockSkewAbsoluteSeconds: new TallyHistogram({
    name: 'meterline_clock_skew_absolute_seconds',
    help: 'Absolute difference between event time and the broker timestamp of its message, by direction: ahead (event time after the write: the producer clock runs ahead) or behind (older than its write: buffered producers)',
    label: 'direction',
    values: SKEW_DIRECTIONS,
    buckets: [1, 10, 60, 600, 3600, 21600, 86400],
  }),
  openWindows: new Gauge({
    name: 'meterline_open_windows',
    help: 'Hours holding open (not yet finalized) aggregates, per partition of the usage topic',
    labelNames: ['partition'] as const,
  }),
  pendingRecords: new Gauge({
    name: 'meterline_worker_pending_records',
    help: 'Submission records the worker is billing now (in flight or backing off)',
  }),
  /** A subscribed customer with hourly zero records whose last accepted hour is overdue: a gap in billing. */
  customersBehind: new Gauge({
    name: 'meterline_subscribed_customers_behind',
    help: 'Subscribed customers (with zero-record dimensions) whose latest hour accepted by AWS is older than the latest hour that should be billed by now',
  }),
  /**
   * The gap job (every worker, every 5 min): hours of subscribed customers with zero-record dimensions
   * that have no record accepted by AWS. `missed`: past AWS's deadline, revenue lost; `late`: closed over
   * an hour ago and still billable.
   */
  billingGaps: new Gauge({
    name: 'meterline_billing_gaps',
    help: 'Customer, dimension and hour combinations of subscribed customers (zero-record dimensions) with no record accepted by AWS: missed (past the AWS deadline) or late (closed over an hour ago, still billable)',
    labelNames: ['state'] as const,
  }),
  /**
   * The submission backlog read from Kafka (worker group's lag, the oldest waiting record's timestamp and
   * deadline), by processors and workers alike: a stopped worker fleet still shows here.
   */
  submissionBacklogRecords: new Gauge({
    name: 'meterline_submission_backlog_records',
    help: "Records on the submission topic past the worker group's committed offset",
  }),
  submissionBacklogAgeSeconds: new Gauge({
    name: 'meterline_submission_backlog_age_seconds',
    help: 'How long the oldest record waiting on the submission topic has waited (its Kafka timestamp); 0 when none',
  }),
  submissionBacklogDeadlineSeconds: new Gauge({
    name: 'meterline_submission_backlog_deadline_seconds',
    help: 'Seconds until the AWS deadline of the oldest waiting submission record (negative: missed); absent when none waits',
  }),
  failedTopicMessages: new Gauge({
    name: 'meterline_failed_topic_messages',
    help: 'Messages kept on the failed-records topic (DLQ), all partitions',
  }),
  /** 1 per role the process runs, with its build: alert on a role whose series are gone. */
  buildInfo: new Gauge({
    name: 'meterline_build_info',
    help: 'Always 1: the version, commit and Node of a running meterline process, one series per role it runs (processor, worker)',
    labelNames: ['version', 'commit', 'node', 'role'] as const,
  }),
  registrations: new Counter({
    name: 'meterline_registrations_total',
    help: 'Buyer registrations through the registration URL, by outcome (registered, or why not)',
    labelNames: ['outcome'] as const,
  }),
  tenantLinks: new Counter({
    name: 'meterline_tenant_links_total',
    help: "Seller tenant ids linked to a buyer's subscription with a hand-off token (POST /marketplace/link), by outcome (linked, already_linked, or why not)",
    labelNames: ['outcome'] as const,
  }),
  /** A stage whose sends fail does not advance past them: alert, it will not catch up by itself. */
  produceFailures: new Counter({
    name: 'meterline_produce_failures_total',
    help: 'Kafka sends that failed after their bounded retries or deadline, by producer (processor, commit, worker) and topic; the stage keeps the input and tries again',
    labelNames: ['producer', 'topic'] as const,
  }),
  producerFailing: new Gauge({
    name: 'meterline_producer_failing',
    help: '1 while the last send of this producer to this topic failed (its stage is stuck there; /readyz fails), 0 once a send succeeds',
    labelNames: ['producer', 'topic'] as const,
  }),
  /** GetEntitlements rounds per tenant and product; `failed` ones keep the contract stored before. */
  entitlementFetches: new Counter({
    name: 'meterline_entitlement_fetches_total',
    help: 'GetEntitlements refreshes of one tenant and product, by trigger (registration, event, schedule) and outcome (stored, failed); a failed one keeps the entitlements stored before',
    labelNames: ['trigger', 'outcome'] as const,
  }),
  lifecycleEvents: new Counter({
    name: 'meterline_lifecycle_events_total',
    help: 'Subscription lifecycle events received, by source (sns, eventbridge), status they carry and outcome',
    labelNames: ['source', 'status', 'outcome'] as const,
  }),
};

export { register };

/** One event's skew against its message's broker timestamp, in seconds: runs for every event. */
export function observeClockSkew(seconds: number): void {
  lastSkewSeconds = seconds;
  if (seconds > 0) metrics.clockSkewAbsoluteSeconds.observe(AHEAD, seconds);
  else metrics.clockSkewAbsoluteSeconds.observe(BEHIND, -seconds);
}

/** Sets the deadline gauges of one stage from the oldest hour it still holds (undefined: none). */
export function reportOldestHour(
  stage: 'processor' | 'worker',
  hourMs: number | undefined,
  api: MeteringApi,
  nowMs: number,
): void {
  metrics.oldestUnsubmittedHourSeconds.set({ stage }, hourMs === undefined ? 0 : (nowMs - hourMs) / 1000);
  metrics.oldestUnsubmittedDeadlineSeconds.set(
    { stage },
    hourMs === undefined
      ? DEFAULT_ACCEPTANCE_WINDOW_MS[api] / 1000
      : (acceptanceDeadline(api, hourMs) - nowMs) / 1000,
  );
}
