/**
 * Maps AWS Metering SDK failures onto meterline errors. The worker decides retry or dead-letter from the
 * resulting `retriable` flag and `code` only.
 */
import { MeterlineError } from '../errors.ts';

const FINAL_INVALID = new Set([
  'InvalidProductCodeException',
  'InvalidUsageDimensionException',
  'InvalidTagException',
  'InvalidUsageAllocationsException',
  'InvalidCustomerIdentifierException',
  'InvalidLicenseException',
  'InvalidEndpointRegionException',
  'InvalidRegionException',
  'CustomerNotEntitledException',
  'DisabledApiException',
  'PlatformNotSupportedException',
  'ValidationException',
]);

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
  if (FINAL_INVALID.has(name)) {
    return new MeterlineError('invalid_request', message, { retriable: false, cause: error, context });
  }
  // Unknown failures without an HTTP answer are most likely transport faults: retry within the deadline.
  return new MeterlineError('aws_error', message, { retriable: status === undefined, cause: error, context });
}
