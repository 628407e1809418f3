/**
 * What the partition scripts (src/redis/lua: applyBatch, finalizeHour, cutCustomer, markEmitted) answer
 * instead of a result, and the typed errors they stand for. The engine and the commit stage act on the
 * errors' codes ('fenced', 'state_lost', 'store_behind', 'stale_batch'), never on the numbers. Each
 * script's header lists which of these it can answer.
 */
import { MeterlineError } from '../errors.ts';
import type { PartitionRef } from '../redis/keys.ts';

export const SCRIPT_CODE = {
  /** The fencing token is not the caller's: a newer owner holds the partition. */
  fenced: -1,
  /** Redis's checkpoint is ahead of the caller's: the batch was applied already (a lost reply). */
  stale: -2,
  /** An hour of the batch was frozen while the batch was prepared. */
  hourFinalized: -3,
  /** The partition's fence is gone: Redis lost its state. */
  stateLost: -4,
  /** The checkpoint moved since the caller read it: read and compute again (not an error). */
  moved: -5,
  /** The fence is older than the caller's: Redis holds an older state (a lagging replica, a snapshot). */
  behind: -6,
} as const;

/** What the caller knew when it called: the checkpoint it held (for `stale` and `behind`). */
export interface ScriptCallContext {
  held?: string | undefined;
}

/**
 * The typed error for a script's answer `[code, detail]`, or undefined when the answer is a result (or
 * `moved`, which the caller handles by reading again).
 */
export function scriptError(
  answer: readonly (number | string | undefined)[] | number,
  p: PartitionRef,
  call: ScriptCallContext = {},
): MeterlineError | undefined {
  const [code, detail] = typeof answer === 'number' ? [answer, undefined] : answer;
  switch (code) {
    case SCRIPT_CODE.fenced:
      return new MeterlineError(
        'fenced',
        `partition ${p.topic}/${p.partition} was assigned to another instance`,
        {
          context: { ...p },
        },
      );
    case SCRIPT_CODE.stateLost:
      return new MeterlineError('state_lost', `Redis lost the state of partition ${p.topic}/${p.partition}`, {
        retriable: true,
        context: { ...p },
      });
    case SCRIPT_CODE.behind: {
      const checkpoint = String(detail ?? '');
      return new MeterlineError(
        'store_behind',
        `Redis is behind partition ${p.topic}/${p.partition}: checkpoint ${checkpoint || '(none)'}, the task had ${call.held ?? '(none)'}`,
        { retriable: true, context: { ...p, checkpoint, held: call.held ?? '' } },
      );
    }
    case SCRIPT_CODE.hourFinalized:
      return new MeterlineError('late_event', `hour ${detail} was finalized while the batch was prepared`, {
        retriable: true,
        context: { ...p, hour: detail },
      });
    case SCRIPT_CODE.stale:
      // Not a failure: a lost reply (or a resend of one) applied these offsets already.
      return new MeterlineError(
        'stale_batch',
        `Redis's checkpoint ${detail} is ahead of the task's ${call.held ?? '(none)'}`,
        { context: { ...p, checkpoint: String(detail) } },
      );
    default:
      return undefined;
  }
}

/** linkTenant.lua's answers. */
export const LINK_CODE = { linked: 1, noEntry: -1, tenantTaken: -2 } as const;
