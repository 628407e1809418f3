/**
 * Log lines: JSON with `trace_id`/`span_id` whenever a span is active (so a line leads to its trace), none
 * outside one, and secrets never written, wherever they sit in the logged object.
 */
import { Writable } from 'node:stream';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, redactUrl } from '../../src/log.ts';
import { isSecretKey, redactSecrets, redactText } from '../../src/redact.ts';

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

  it('never write secrets at any depth, inside URLs, errors, messages and arrays', () => {
    const out = capture();
    const logger = createLogger('test', 'info', out.stream);
    // The issue's own case: a Redis URL with a password, and a SASL password three levels deep.
    logger.info({ config: { redis: { url: 'redis://:s3cret@host:6379', prefix: 'meterline' } } }, 'config');
    logger.info(
      {
        kafka: {
          security: { sasl: { mechanism: 'scram-sha-512', username: 'svc-meter', password: 'hunter2' } },
        },
      },
      'kafka',
    );
    // What a Config holds, deeper than two levels, with key names in any case and spelling.
    logger.info(
      {
        config: {
          env: {
            KAFKA_SASL_PASSWORD: 'SECRET-env-sasl',
            METERLINE_EVENTS_API_KEY: 'SECRET-env-events-key',
            AWS_SESSION_TOKEN: 'SECRET-env-session',
            REDIS_URL: 'rediss://default:SECRET-env-redis@cache.internal:6380/0',
          },
          kafka: {
            brokers: ['kafka-0:9093', 'kafka-1:9093'],
            security: {
              ssl: {
                rejectUnauthorized: true,
                key: '-----BEGIN PRIVATE KEY-----\nSECRET-pem\n-----END PRIVATE KEY-----',
              },
              sasl: { mechanism: 'plain', username: 'svc-meter', Password: 'SECRET-sasl-cased' },
            },
          },
          registration: { port: 8080, eventsApiKey: 'SECRET-events-key', snsTopicArns: [] },
          worker: {
            aws: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'SECRET-aws' },
            // A key that names secrets hides all under it, whatever its shape.
            credentials: { accessKeyId: 'AKID-in-credentials', value: 'SECRET-credentials' },
          },
          deep: {
            a: {
              b: { c: { d: { e: { Authorization: 'Bearer SECRET-bearer', X_API_KEY: 'SECRET-x-api' } } } },
            },
          },
          privateKey: 'SECRET-private-key',
          client_secret: 'SECRET-client',
        },
        // Arrays: of URLs, and of objects holding secrets.
        urls: ['redis://:SECRET-arr-1@h1:6379', 'http://u:SECRET-arr-2@h2/path', 'redis://h3:6379'],
        users: [{ name: 'ops', token: 'SECRET-arr-token' }, [{ apiKey: 'SECRET-arr-nested' }]],
        // Query parameters carrying credentials.
        link: 'https://bucket.s3.amazonaws.com/report.csv?X-Amz-Date=20261127T100000Z&X-Amz-Signature=SECRETsig&X-Amz-Security-Token=SECRETsts',
        hook: 'https://hooks.example.com/in?token=SECRET-query-token&team=billing',
      },
      'config loaded',
    );
    // An error whose message (and so its stack) names a URL with a password, with a cause doing the same.
    const cause = new Error('AUTH failed for rediss://user:SECRET-cause@cache:6380');
    const err = Object.assign(new Error('connect ECONNREFUSED redis://:SECRET-err@cache:6379', { cause }), {
      code: 'ECONNREFUSED',
      address: 'redis://:SECRET-err-prop@cache:6379',
    });
    logger.error({ err }, 'redis failed');
    logger.error(err);
    // Message text and interpolation, and a child logger's bindings.
    logger.warn('retrying http://u:SECRET-msg@h/x');
    logger.warn('retrying %s', 'redis://:SECRET-interp@h:6379');
    logger.child({ url: 'http://admin:SECRET-child@h:8080/' }).info('child');

    const text = out
      .lines()
      .map((l) => JSON.stringify(l))
      .join('\n');
    for (const secret of ['s3cret', 'hunter2']) expect(text).not.toContain(secret);
    expect(text.match(/SECRET[^"]*/g)).toBeNull();
    expect(text).toContain('[redacted]');
    // What is not secret stays readable: hosts, users, mechanisms, ids, other query parameters.
    for (const kept of [
      'host:6379',
      'meterline',
      'svc-meter',
      'scram-sha-512',
      'cache.internal:6380/0',
      'kafka-1:9093',
      'AKIDEXAMPLE',
      'redis://h3:6379',
      'h2/path',
      'X-Amz-Date=20261127T100000Z',
      'team=billing',
      'ECONNREFUSED',
      'h:8080',
    ])
      expect(text).toContain(kept);
    const lines = out.lines();
    expect(lines[0]).toMatchObject({ config: { redis: { prefix: 'meterline' } }, msg: 'config' });
    expect((lines[0] as { config: { redis: { url: string } } }).config.redis.url).toMatch(
      /^redis:\/\/.*@host:6379$/,
    );
    expect(lines[2]).toMatchObject({ config: { registration: { port: 8080, snsTopicArns: [] } } });
    const errLine = lines[3] as { err: { type: string; message: string; stack: string; code: string } };
    expect(errLine.err).toMatchObject({ type: 'Error', code: 'ECONNREFUSED' });
    expect(errLine.err.message).toContain('connect ECONNREFUSED redis://');
    expect(errLine.err.stack).toContain('log.test.ts');
  });

  it('leave non-secret data alone, and survive cycles and very deep or large objects', () => {
    const out = capture();
    const logger = createLogger('test', 'info', out.stream);
    const plain = {
      tokens: 1200,
      tokenCount: 3,
      dimension: 'tokens',
      key: 'meterline:hour:tenant-a:2026-11-27T10',
      keys: ['a', 'b'],
      email: 'ops@example.com',
      url: 'https://example.com/a?b=c&d=e#f',
      redis: 'redis://127.0.0.1:6379',
      when: new Date('2026-11-27T10:00:00.000Z'),
      nothing: null,
      flag: false,
    };
    logger.info(plain, 'plain');
    const prose = [
      'Basic authentication is not offered; SET key=meterline:hour exit code=1 records=12',
      'token bucket refilled for tenant-a at https://example.com/x?page=2#top',
      '{"dimension":"tokens","quantity":3}',
    ];
    for (const text of prose) logger.info(text);
    const cyclic: Record<string, unknown> = { name: 'loop', password: 'SECRET-cyclic' };
    cyclic.self = cyclic;
    logger.info({ cyclic }, 'cyclic');
    let deep: Record<string, unknown> = { password: 'SECRET-deepest', url: 'redis://:SECRET-deep-url@h' };
    for (let i = 0; i < 100; i++) deep = { next: deep };
    logger.info({ deep }, 'deep');
    logger.info(
      { many: Array.from({ length: 20_000 }, (_, i) => ({ i, password: `SECRET-${i}` })) },
      'large',
    );
    const [first, ...others] = out.lines();
    expect(others.slice(0, prose.length).map((l) => l.msg)).toEqual(prose);
    const rest = others.slice(prose.length);
    expect(first).toMatchObject({ ...plain, when: '2026-11-27T10:00:00.000Z', msg: 'plain' });
    expect(rest.map((l) => l.msg)).toEqual(['cyclic', 'deep', 'large']);
    expect(JSON.stringify(rest).match(/SECRET[^"]*/g)).toBeNull();
    expect(rest[0]).toMatchObject({ cyclic: { name: 'loop' } });
  });

  it('know secret keys by name, whatever their case and separators, and leave the rest', () => {
    const secret = [
      'password',
      'Password',
      'saslPassword',
      'KAFKA_SASL_PASSWORD',
      'passphrase',
      'secretAccessKey',
      'AWS_SECRET_ACCESS_KEY',
      'client_secret',
      'token',
      'sessionToken',
      'AWS_SESSION_TOKEN',
      'x-amzn-marketplace-token',
      'apiKey',
      'api_key',
      'X-Api-Key',
      'eventsApiKey',
      'METERLINE_EVENTS_API_KEY',
      'authorization',
      'Proxy-Authorization',
      'credentials',
      'privateKey',
      'private_key',
      'signingKey',
      'cookie',
      'Set-Cookie',
      'pfx',
      'auth',
    ];
    const plain = [
      'key',
      'keys',
      'partitionKey',
      'accessKeyId',
      'tokens',
      'tokenCount',
      'secretName',
      'passwordFile',
      'KAFKA_SSL_CA_FILE',
      'REDIS_TLS_CA_FILE',
      'username',
      'mechanism',
      'url',
      'dimension',
      'author',
    ];
    expect(secret.filter((k) => !isSecretKey(k))).toEqual([]);
    expect(plain.filter((k) => isSecretKey(k))).toEqual([]);
  });

  it('find secrets inside strings without touching the rest', () => {
    const cases: [string, string][] = [
      ['redis://:pw@h1:6379,redis://:pw@h2:6379', 'redis://:[redacted]@h1:6379,redis://:[redacted]@h2:6379'],
      ['redis://h1:6379,rediss://u:pw@h2:6380/0', 'redis://h1:6379,rediss://u:[redacted]@h2:6380/0'],
      ['redis://:p@ss@h:6379', 'redis://:[redacted]@h:6379'],
      ['https://ghp_abcdef123@github.com/o/r.git', 'https://[redacted]@github.com/o/r.git'],
      [
        'GET /x?api_key=abc&page=2 and ?key=k1&sig=s1',
        'GET /x?api_key=[redacted]&page=2 and ?key=[redacted]&sig=[redacted]',
      ],
      ['Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln', 'Authorization: Bearer [redacted]'],
      ['body {"user":"ops","password":"pw1"}', 'body {"user":"ops","password":"[redacted]"}'],
      ['ops@example.com wrote https://example.com/a@b', 'ops@example.com wrote https://example.com/a@b'],
      ['key=meterline:hour:t:2026 code=1 token bucket', 'key=meterline:hour:t:2026 code=1 token bucket'],
    ];
    for (const [input, expected] of cases) expect(redactText(input)).toBe(expected);
    expect(redactSecrets({ u: new URL('redis://:pw@h:6379/0') })).toEqual({
      u: 'redis://:[redacted]@h:6379/0',
    });
    const aggregate = new AggregateError([new Error('to http://u:pw@h')], 'all failed');
    const copy = redactSecrets(aggregate);
    expect(copy).toBeInstanceOf(AggregateError);
    expect((copy.errors[0] as Error).message).toBe('to http://u:[redacted]@h');
    // Nothing to hide: the very same object back, nothing copied.
    const clean = { partition: 3, tenant: 'tenant-a', nested: { list: [1, 'two'] } };
    expect(redactSecrets(clean)).toBe(clean);
  });

  it('name endpoints without their credentials', () => {
    expect(redactUrl('redis://user:r2-secret@redis.internal:6379/0')).toBe(
      'redis://user:redacted@redis.internal:6379/0',
    );
    expect(redactUrl('rediss://:r3-secret@cache:6380')).not.toContain('r3-secret');
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });
});
