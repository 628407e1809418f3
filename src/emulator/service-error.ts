/**
 * Errors the emulator answers with, in AWS's own vocabulary. `type` goes on the wire as `__type` and
 * `x-amzn-ErrorType`; the SDK maps it back to its exported exception class (or to the service base
 * exception, named `type`, for names the model does not declare such as ValidationException).
 */

/** HTTP status per error type where AWS does not use plain 400 (taken from the service model traits). */
const STATUS_BY_TYPE: Readonly<Record<string, number>> = {
  InternalServiceErrorException: 500, // `error: server`
  ServiceUnavailableException: 503,
  IdempotencyConflictException: 409, // `httpError: 409`
  MissingAuthenticationTokenException: 403,
  RequestEntityTooLargeException: 413,
};

export class ServiceError extends Error {
  /** The AWS error name, e.g. `TimestampOutOfBoundsException`. */
  readonly type: string;
  readonly status: number;

  constructor(type: string, message: string, status: number = STATUS_BY_TYPE[type] ?? 400) {
    super(message);
    this.name = 'ServiceError';
    this.type = type;
    this.status = status;
  }
}

/** AWS's (Coral) validation message: every violated model constraint, listed at once. */
export function validationError(violations: readonly string[]): ServiceError {
  const n = violations.length;
  return new ServiceError(
    'ValidationException',
    `${n} validation error${n === 1 ? '' : 's'} detected: ${violations.join('; ')}`,
  );
}

/** A JSON body that does not fit the model's types (wrong JSON type, fractional integer, bad JSON). */
export function serializationError(message: string): ServiceError {
  return new ServiceError('SerializationException', message);
}
