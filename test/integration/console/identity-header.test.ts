/**
 * The console behind an authenticating proxy (METERLINE_CONSOLE_IDENTITY_HEADER): the header names the
 * user, METERLINE_CONSOLE_OPERATORS the ones who may redrive; without the header nothing loads. The real
 * server, in process, over HTTP, against the stack's Kafka and Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stores, stores } from '../../../src/console/data.ts';
import { type RunningConsole, startConsole } from '../../../src/console/server.ts';
import { JaegerClient } from '../../../src/observability/jaeger-client.ts';
import { createRedis } from '../../../src/redis/client.ts';
import { stackEnv, testKafka, testLogger } from '../../support/harness.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

const kafka = testKafka();
const redis = createRedis(stackEnv().redisUrl);
let tp: TestPipeline | undefined;
let running: RunningConsole | undefined;
let base = '';

beforeAll(async () => {
  tp = testPipeline('console-proxy', {
    env: {
      METERLINE_CONSOLE_IDENTITY_HEADER: 'X-Forwarded-User',
      METERLINE_CONSOLE_OPERATORS: 'ana@example.com',
      METERLINE_CONSOLE_PORT: '0',
    },
  });
  await tp.createTopics(kafka);
  const config = tp.config(['console']);
  config.topics.audit = `${tp.run}-audit`;
  const s: Stores = stores(config, kafka, redis, new JaegerClient('http://127.0.0.1:9'));
  running = await startConsole(s, testLogger(), { port: 0, host: '127.0.0.1' });
  base = `http://127.0.0.1:${running.port}`;
});

afterAll(async () => {
  await running?.close();
  await tp?.cleanup(kafka);
  redis.disconnect();
});

const get = (path: string, user?: string) =>
  fetch(`${base}${path}`, { redirect: 'manual', headers: user ? { 'x-forwarded-user': user } : {} });

async function csrfOf(user: string): Promise<string> {
  const text = await (await get('/dlq', user)).text();
  return /name="_csrf" value="([^"]+)"/.exec(text)?.[1] ?? '';
}

const post = (user: string, form: Record<string, string>) =>
  fetch(`${base}/dlq/redrive`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'x-forwarded-user': user, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });

describe('the console behind an identity proxy', () => {
  it('loads nothing without the header', async () => {
    const res = await get('/customers');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/signin');
    await res.body?.cancel();
  });

  it('names the user from the header, with the operator role only for the listed ones', async () => {
    const ana = await (await get('/customers', 'ana@example.com')).text();
    expect(ana).toContain('ana@example.com (operator)');
    const bo = await get('/dlq', 'bo@example.com');
    expect(bo.status).toBe(200);
    const text = await bo.text();
    expect(text).toContain('bo@example.com (read-only)');
    expect(text).not.toContain('data-redrive');
  });

  it('refuses a redrive by a read-only user, and a POST with another user’s CSRF token', async () => {
    const bo = await post('bo@example.com', {
      _csrf: await csrfOf('bo@example.com'),
      mode: 'dry-run',
      id: '0:0',
    });
    expect(bo.status).toBe(403);
    await bo.body?.cancel();
    const stolen = await post('ana@example.com', {
      _csrf: await csrfOf('bo@example.com'),
      mode: 'dry-run',
      id: '0:0',
    });
    expect(stolen.status).toBe(403);
    await stolen.body?.cancel();
    // Ana's own token is taken: the empty topic has no entry 0:0, so the dry run has nothing to show.
    const own = await post('ana@example.com', {
      _csrf: await csrfOf('ana@example.com'),
      mode: 'dry-run',
      id: '0:0',
    });
    expect(own.status).toBe(200);
    expect(await own.text()).toContain('Nothing to send');
  });
});
