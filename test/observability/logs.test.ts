/**
 * Log lines: JSON with `trace_id`/`span_id` whenever a span is active (so a line leads to its trace), none
 * outside one, and secrets never written, wherever they sit in the logged object.
 */
import { Writable } from 'node:stream';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, redactUrl } from '../../src/log.ts';

function capture(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('log lines', () => {
  const manager = new AsyncLocalStorageContextManager();
  beforeAll(() => {
    context.setGlobalContextManager(manager.enable());
  });
  afterAll(() => {
    context.disable();
  });

  it('carry the active span’s trace and span ids, and only inside a span', async () => {
    const out = capture();
    const logger = createLogger('test', 'info', out.stream);
    const span = trace.wrapSpanContext({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    });
    logger.info('before');
    await context.with(trace.setSpan(context.active(), span), async () => {
      await Promise.resolve();
      logger.info({ hour: '2026-11-27T10:00:00.000Z' }, 'inside');
    });
    logger.info('after');
    const [before, inside, after] = out.lines();
    expect(inside).toMatchObject({
      msg: 'inside',
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
      span_id: '00f067aa0ba902b7',
    });
    expect(before).not.toHaveProperty('trace_id');
    expect(after).not.toHaveProperty('trace_id');
  });

  it('never write secrets, at the top level or nested', () => {
    const out = capture();
    const logger = createLogger('test', 'info', out.stream);
    logger.info(
      {
        password: 'p1-secret',
        token: 't1-secret',
        aws: { secretAccessKey: 's1-secret', sessionToken: 'st-secret', accessKeyId: 'AKIDEXAMPLE' },
        kafka: { sasl: { mechanism: 'scram-sha-512', password: 'k1-secret' } },
        env: { REDIS_URL: 'redis://:r1-secret@redis:6379', AWS_SECRET_ACCESS_KEY: 'a1-secret' },
        headers: { authorization: 'Bearer h1-secret' },
      },
      'config loaded',
    );
    const text = JSON.stringify(out.lines());
    expect(text).not.toMatch(/-secret/);
    expect(text).toContain('[redacted]');
    // What is not secret stays readable.
    expect(text).toContain('scram-sha-512');
    expect(text).toContain('AKIDEXAMPLE');
  });

  it('name endpoints without their credentials', () => {
    expect(redactUrl('redis://user:r2-secret@redis.internal:6379/0')).toBe(
      'redis://user:redacted@redis.internal:6379/0',
    );
    expect(redactUrl('rediss://:r3-secret@cache:6380')).not.toContain('r3-secret');
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });
});
