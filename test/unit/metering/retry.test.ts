import { describe, expect, it } from 'vitest';
import { MeterlineError } from '../../../src/errors.ts';
import { classifyAwsError } from '../../../src/metering/aws-errors.ts';
import { RETRY_DEFAULTS, retry } from '../../../src/metering/retry.ts';

const throttled = () => new MeterlineError('aws_throttled', 'slow down', { retriable: true });

/** A clock that the recorded waits move forward: no real time passes. */
function fakeTime(start = 1_000_000) {
  let now = start;
  const waits: number[] = [];
  return {
    waits,
    now: () => now,
    sleep: async (ms: number) => {
      waits.push(ms);
      now += ms;
    },
  };
}

describe('retry', () => {
  it('returns the first success, retrying retriable failures', async () => {
    const t = fakeTime();
    let calls = 0;
    const out = await retry(
      async (attempt) => {
        calls++;
        if (attempt < 3) throw throttled();
        return 'ok';
      },
      { sleep: t.sleep, now: t.now },
    );
    expect(out).toBe('ok');
    expect(calls).toBe(3);
    expect(t.waits).toHaveLength(2);
  });

  it('bails on a non-retriable error at once, throwing it as it is', async () => {
    const t = fakeTime();
    const final = new MeterlineError('invalid_tag', 'bad tag');
    let calls = 0;
    const failed = retry(
      async () => {
        calls++;
        throw final;
      },
      { sleep: t.sleep, now: t.now },
    );
    await expect(failed).rejects.toBe(final);
    expect(calls).toBe(1);
    expect(t.waits).toEqual([]);
  });

  it('throws an error it cannot classify as it is, without retrying', async () => {
    const t = fakeTime();
    const raw = new TypeError('a bug');
    let calls = 0;
    const failed = retry(
      async () => {
        calls++;
        throw raw;
      },
      { sleep: t.sleep },
    );
    await expect(failed).rejects.toBe(raw);
    expect(calls).toBe(1);
  });

  it('reads retriable from the classified AWS error', async () => {
    const t = fakeTime();
    const answers = [
      Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }),
      Object.assign(new Error('no such customer'), { name: 'InvalidCustomerIdentifierException' }),
    ];
    let calls = 0;
    const failed = retry(
      async () => {
        throw answers[calls++];
      },
      { classify: classifyAwsError, sleep: t.sleep, now: t.now },
    );
    await expect(failed).rejects.toMatchObject({ code: 'invalid_customer_identifier', retriable: false });
    expect(calls).toBe(2);
  });

  it('gives up after the attempts, keeping the last error as the cause with its code and flag', async () => {
    const t = fakeTime();
    const errors: MeterlineError[] = [];
    const failed = retry(
      async () => {
        const e = throttled();
        errors.push(e);
        throw e;
      },
      { attempts: 4, sleep: t.sleep, now: t.now },
    );
    const error = await failed.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(errors).toHaveLength(4);
    expect(t.waits).toHaveLength(3);
    expect(error).toBeInstanceOf(MeterlineError);
    expect(error).toMatchObject({ code: 'aws_throttled', retriable: true, context: { attempts: 4 } });
    expect((error as Error).cause).toBe(errors[3]);
    expect((error as Error).message).toContain('slow down');
  });

  it('does not wait past the deadline: it throws the last error instead', async () => {
    const t = fakeTime(0);
    let calls = 0;
    // Every wait is its full cap (random 1 → 1 ms below it): 100, 200, 400, 800 ...
    const failed = retry(
      async () => {
        calls++;
        throw throttled();
      },
      {
        attempts: 100,
        backoff: { baseMs: 100, maxMs: 60_000 },
        deadlineMs: 1_000,
        random: () => 0.99999,
        sleep: t.sleep,
        now: t.now,
      },
    );
    const error = await failed.then(
      () => undefined,
      (e: unknown) => e as MeterlineError,
    );
    // Waits of 99 + 199 + 399 end at 697; the next (799) would end at 1496, past the deadline.
    expect(t.waits).toEqual([99, 199, 399]);
    expect(calls).toBe(4);
    expect(t.now()).toBeLessThanOrEqual(1_000);
    expect(error?.code).toBe('aws_throttled');
    expect(error?.message).toContain('deadline');
    expect(error?.cause).toBeInstanceOf(MeterlineError);
  });

  it('waits with full jitter: between 0 and the capped exponential bound', async () => {
    const bounds = { baseMs: 50, maxMs: 1_000 };
    for (const r of [0, 0.5, 0.999999]) {
      const t = fakeTime();
      await retry(
        async (attempt) => {
          if (attempt < 8) throw throttled();
        },
        { attempts: 8, backoff: bounds, random: () => r, sleep: t.sleep, now: t.now },
      );
      expect(t.waits).toHaveLength(7);
      t.waits.forEach((wait, i) => {
        const cap = Math.min(bounds.maxMs, bounds.baseMs * 2 ** i);
        expect(wait).toBeGreaterThanOrEqual(0);
        expect(wait).toBeLessThan(cap);
        expect(wait).toBe(Math.floor(r * cap));
      });
    }
  });

  it('tells onRetry of each wait, and uses the defaults when given nothing', async () => {
    const t = fakeTime();
    const seen: [number, string, number][] = [];
    const failed = retry(
      async () => {
        throw throttled();
      },
      {
        sleep: t.sleep,
        now: t.now,
        onRetry: ({ attempt, error, waitMs }) => {
          seen.push([attempt, error.code, waitMs]);
        },
      },
    );
    await expect(failed).rejects.toMatchObject({ code: 'aws_throttled' });
    expect(seen.map(([a]) => a)).toEqual(
      Array.from({ length: RETRY_DEFAULTS.attempts - 1 }, (_, i) => i + 1),
    );
    expect(seen.map(([, , w]) => w)).toEqual(t.waits);
  });
});
