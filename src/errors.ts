/**
 * One error base for the whole pipeline. Retry and dead-letter decisions read `code` and `retriable`,
 * never the message.
 */
export const ERROR_CODES = [
  // configuration
  'config_invalid',
  // ingest reason codes (stage=ingest); stable, they appear on the failed-records topic
  'empty_message',
  'tombstone',
  'malformed_json',
  'schema_violation',
  'timestamp_without_zone',
  'invalid_timestamp',
  'future_timestamp',
  'too_old',
  'negative_quantity',
  'quantity_out_of_range',
  'unknown_dimension',
  'message_too_large',
  'unknown_schema',
  'undecodable',
  'late_event',
  // submit reason codes (stage=submit)
  'customer_mapping_missing',
  'customer_not_subscribed',
  'duplicate_record',
  'timestamp_out_of_bounds',
  'deadline_exceeded',
  'invalid_request',
  // commit reason codes (stage=commit): a frozen hour that never reached the submission topic.
  // emit_failed: still not emitted at its AWS deadline minus the submit margin (the envelope holds each
  // record: redrive it); frozen_hour_lost: its frozen records were gone before the emit (nothing to redrive)
  'emit_failed',
  'frozen_hour_lost',
  // AWS's own Invalid* exceptions, one code each, so the DLQ says which rule a record broke
  'invalid_license',
  'invalid_customer_identifier',
  'invalid_tag',
  'invalid_usage_allocations',
  'invalid_usage_dimension',
  'invalid_product_code',
  // AWS refused the API call itself, whatever its records (DisabledApi, wrong Region endpoint)
  'aws_api_refused',
  'aws_throttled',
  'aws_unavailable',
  'aws_unprocessed',
  'aws_error',
  // registration (the buyer's token) and subscription lifecycle events
  'registration_token_invalid',
  'registration_token_expired',
  'product_not_in_plan',
  'lifecycle_event_invalid',
  'lifecycle_event_unauthorized',
  // state
  'fenced',
  'stale_batch',
  'state_lost',
  // Redis holds an older state than the task saw (failover to a lagging replica, an older snapshot)
  'store_behind',
  'redis_error',
  'kafka_error',
  // the schema registry could not answer (refused, timed out, 5xx): retry the batch, never dead-letter
  'registry_unavailable',
  'tracing_unavailable',
  // subscription: Amazon SNS messages (AWS Marketplace subscription changes)
  'sns_message_invalid',
  'sns_signature_invalid',
  // the signing certificate could not be fetched: retry the delivery
  'sns_cert_unavailable',
  // the signed hand-off to the seller's onboarding page: forged or malformed, expired, already used
  'handoff_token_invalid',
  'handoff_token_expired',
  'handoff_token_reused',
  // linking a seller's tenant id to a subscription (meterline customers link, POST /marketplace/link)
  'tenant_invalid',
  'tenant_taken',
  'subscription_not_found',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface MeterlineErrorOptions {
  retriable?: boolean;
  cause?: unknown;
  /** Structured context; enumerable so it shows in JSON logs. */
  context?: Record<string, unknown>;
}

export class MeterlineError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly context: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: MeterlineErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeterlineError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.context = options.context ?? {};
  }
}

export function isMeterlineError(error: unknown): error is MeterlineError {
  return error instanceof MeterlineError;
}

/** Config errors carry every violation, so the operator fixes them all in one go. */
export class ConfigError extends MeterlineError {
  readonly source: string;
  readonly issues: readonly string[];
  constructor(source: string, issues: readonly string[]) {
    super('config_invalid', `${source} is invalid:\n${issues.map((i) => `  - ${i}`).join('\n')}`);
    this.name = 'ConfigError';
    this.source = source;
    this.issues = issues;
  }
}
