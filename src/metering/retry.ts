/**
 * The one retry loop: exponential backoff with full jitter (backoff.ts), bounded by attempts and by a
 * deadline. Whether to retry is read from the error's `retriable` flag only (a MeterlineError, or what
 * `classify` makes of a raw error); a final error is thrown at once. When attempts or the deadline run
 * out, the last error is thrown wrapped, same code and flag, with the last error as its cause.
 * Modelled on kafkajs's createRetry.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { MeterlineError } from '../errors.ts';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from './backoff.ts';

/** The defaults, in one place: attempts in all, and no deadline. */
export const RETRY_DEFAULTS = { attempts: 5, backoff: DEFAULT_BACKOFF } as const;

export interface RetryInfo {
  /** 1 for the first attempt. */
  attempt: number;
  error: MeterlineError;
  /** The wait before the next attempt. */
  waitMs: number;
}

export interface RetryOptions {
  /** Attempts in all, the first one included. */
  attempts?: number;
  backoff?: BackoffOptions;
  /**
   * Epoch ms: a wait that would end after it is not waited out; the last error is thrown instead (so no
   * retry starts after it).
   */
  deadlineMs?: number;
  /**
   * Raw errors to meterline errors (say, classifyAwsError); undefined: final, thrown as it is. Default: a
   * MeterlineError as it is.
   */
  classify?: (error: unknown) => MeterlineError | undefined;
  /** Called before each wait (logs, metrics, a rate limiter told of throttling). */
  onRetry?: (info: RetryInfo) => void | Promise<void>;
  /** The wait itself (tests, or a wait that keeps a heartbeat or honours an abort signal). */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  random?: () => number;
}

export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? RETRY_DEFAULTS.attempts;
  const backoff = options.backoff ?? RETRY_DEFAULTS.backoff;
  const classify = options.classify ?? asMeterlineError;
  const sleep = options.sleep ?? ((ms: number) => delay(ms));
  const now = options.now ?? Date.now;
  for (let attempt = 1; ; attempt++) {
    let failure: MeterlineError | undefined;
    try {
      return await fn(attempt);
    } catch (error) {
      failure = classify(error);
      if (!failure) throw error;
    }
    if (!failure.retriable) throw failure;
    if (attempt >= attempts) throw exhausted(failure, attempt, `after ${attempt} attempts`);
    const waitMs = backoffDelay(attempt - 1, backoff, options.random);
    if (options.deadlineMs !== undefined && now() + waitMs > options.deadlineMs) {
      throw exhausted(failure, attempt, `at the deadline ${new Date(options.deadlineMs).toISOString()}`);
    }
    await options.onRetry?.({ attempt, error: failure, waitMs });
    await sleep(waitMs);
  }
}

function asMeterlineError(error: unknown): MeterlineError | undefined {
  return error instanceof MeterlineError ? error : undefined;
}

function exhausted(last: MeterlineError, attempts: number, when: string): MeterlineError {
  return new MeterlineError(last.code, `${last.message} (gave up ${when})`, {
    retriable: last.retriable,
    cause: last,
    context: { ...last.context, attempts },
  });
}
