/**
 * Maps AWS Metering SDK failures onto meterline errors. The worker decides retry or dead-letter from the
 * resulting `retriable` flag and `code` only.
 */
import { type ErrorCode, MeterlineError } from '../errors.ts';

/**
 * Final answers, each with its reason code. Those AWS raises for one record's content reject the whole
 * BatchMeterUsage call all the same; the worker narrows them down to the records that caused them.
 */
const FINAL: ReadonlyMap<string, ErrorCode> = new Map<string, ErrorCode>([
  ['InvalidLicenseException', 'invalid_license'],
  ['InvalidCustomerIdentifierException', 'invalid_customer_identifier'],
  ['InvalidTagException', 'invalid_tag'],
  ['InvalidUsageAllocationsException', 'invalid_usage_allocations'],
  ['InvalidUsageDimensionException', 'invalid_usage_dimension'],
  ['ValidationException', 'invalid_request'],
  ['CustomerNotEntitledException', 'invalid_request'],
  // The call's own fields or the account: no record of the call could pass.
  ['InvalidProductCodeException', 'invalid_product_code'],
  ['DisabledApiException', 'aws_api_refused'],
  ['InvalidEndpointRegionException', 'aws_api_refused'],
  ['InvalidRegionException', 'aws_api_refused'],
  ['PlatformNotSupportedException', 'aws_api_refused'],
]);

/** Final answers about the call as a whole (its ProductCode, the API, the Region): resending fewer records cannot help. */
const CALL_LEVEL: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['invalid_product_code', 'aws_api_refused']);

/**
 * Whether a final error that rejected a whole BatchMeterUsage call may have been caused by some of its
 * records only, so that resending them apart can bill the others.
 */
export function mayBeCausedByRecords(failure: MeterlineError): boolean {
  return !failure.retriable && !CALL_LEVEL.has(failure.code);
}

const TRANSIENT_NETWORK = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'TimeoutError',
  'AbortError',
]);

export function classifyAwsError(error: unknown): MeterlineError {
  const e = error as {
    name?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const name = e?.name ?? 'Error';
  const status = e?.$metadata?.httpStatusCode;
  const context = { awsError: name, httpStatus: status };
  const message = `${name}: ${e?.message ?? String(error)}`;
  if (name === 'ThrottlingException' || status === 429) {
    return new MeterlineError('aws_throttled', message, { retriable: true, cause: error, context });
  }
  if (name === 'InternalServiceErrorException' || (status !== undefined && status >= 500)) {
    return new MeterlineError('aws_unavailable', message, { retriable: true, cause: error, context });
  }
  if (TRANSIENT_NETWORK.has(name) || (e?.code && TRANSIENT_NETWORK.has(e.code))) {
    return new MeterlineError('aws_unavailable', message, { retriable: true, cause: error, context });
  }
  if (name === 'TimestampOutOfBoundsException') {
    return new MeterlineError('timestamp_out_of_bounds', message, {
      retriable: false,
      cause: error,
      context,
    });
  }
  // Both mean AWS holds an earlier record for this dimension and hour with another quantity: it stands.
  if (name === 'DuplicateRequestException' || name === 'IdempotencyConflictException') {
    return new MeterlineError('duplicate_record', message, { retriable: false, cause: error, context });
  }
  const final = FINAL.get(name);
  if (final) return new MeterlineError(final, message, { retriable: false, cause: error, context });
  // Unknown failures without an HTTP answer are most likely transport faults: retry within the deadline.
  return new MeterlineError('aws_error', message, { retriable: status === undefined, cause: error, context });
}
