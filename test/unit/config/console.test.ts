/** The console's settings (src/config/console.ts): closed by default, tokens checked without echoing them. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.ts';
import { DEFAULT_CONSOLE_PORT } from '../../../src/config/console.ts';
import { ConfigError } from '../../../src/errors.ts';
import { writeTempJson } from '../../support/harness.ts';

const plan = writeTempJson('plan.json', {
  productCode: 'prod-x',
  dimensions: [{ name: 'api_calls', model: 'hourly', aggregation: 'sum' }],
});
const base = { KAFKA_BROKERS: 'a:9092', REDIS_URL: 'redis://127.0.0.1:6379', METERLINE_PLAN: plan };
const TOKEN = 'x'.repeat(24);

function issues(env: Record<string, string>): string[] {
  try {
    loadConfig(['console'], { ...base, ...env });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return [...error.issues];
  }
}

describe('console settings', () => {
  it('refuses to start open: neither tokens nor an identity header', () => {
    expect(issues({})).toEqual([expect.stringContaining('the console does not start open')]);
    // Other roles do not care.
    expect(() => loadConfig(['processor'], base)).not.toThrow();
  });

  it('takes name:role:token entries, with the default port and its own ops port', () => {
    const c = loadConfig(['console'], {
      ...base,
      METERLINE_CONSOLE_TOKENS: `ana:operator:${TOKEN}, vic:viewer:${TOKEN}y`,
    });
    expect(c.console.users.map((u) => [u.name, u.role])).toEqual([
      ['ana', 'operator'],
      ['vic', 'viewer'],
    ]);
    expect(c.console.port).toBe(DEFAULT_CONSOLE_PORT);
    expect(c.opsPort).toBe(9467);
  });

  it('names the entry of a bad token, never its text', () => {
    const found = issues({
      METERLINE_CONSOLE_TOKENS: `ana:admin:${TOKEN},bob:viewer:short-secret,cy:viewer:${TOKEN},dee:operator:${TOKEN}`,
    });
    expect(found).toEqual([
      'METERLINE_CONSOLE_TOKENS: entry 1: the role must be viewer or operator (name:role:token)',
      'METERLINE_CONSOLE_TOKENS: entry 2: the token must have at least 24 characters',
      'METERLINE_CONSOLE_TOKENS: entry 4: the same token as another entry',
    ]);
    expect(found.join(' ')).not.toContain('short-secret');
  });

  it('behind a proxy: the identity header and its operators', () => {
    const c = loadConfig(['console'], {
      ...base,
      METERLINE_CONSOLE_IDENTITY_HEADER: 'X-Forwarded-User',
      METERLINE_CONSOLE_OPERATORS: 'ana@example.com, bo@example.com',
    });
    expect(c.console.identityHeader).toBe('x-forwarded-user');
    expect(c.console.operators).toEqual(['ana@example.com', 'bo@example.com']);
    expect(issues({ METERLINE_CONSOLE_IDENTITY_HEADER: 'X Forwarded' })).toEqual([
      expect.stringContaining('METERLINE_CONSOLE_IDENTITY_HEADER'),
    ]);
  });
});
