import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generatedSchemas } from '../../../deploy/gen-schemas.ts';
import { loadConfig } from '../../../src/config/config.ts';
import { parseCustomers } from '../../../src/config/customers.ts';
import { parsePlan } from '../../../src/config/plan.ts';
import { ConfigError } from '../../../src/errors.ts';
import { writeTempJson } from '../../support/harness.ts';

const plan = writeTempJson('plan.json', { productCode: 'prod-x', dimensions: [{ name: 'api_calls' }] });
const customers = writeTempJson('customers.json', {
  t1: {
    customerAwsAccountId: '123456789012',
    licenseArn: 'arn:aws:license-manager::123456789012:license:l-1',
  },
});
const base = { KAFKA_BROKERS: 'a:9092,b:9092', REDIS_URL: 'redis://127.0.0.1:6379', METERLINE_PLAN: plan };

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return [...error.issues];
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(['processor'], base);
    expect(c.kafka.brokers).toEqual(['a:9092', 'b:9092']);
    expect(c.topics).toEqual({
      usage: 'usage-events',
      submissions: 'metering-submissions',
      failed: 'metering-failed',
      changelog: 'meterline-window-changelog',
      audit: 'meterline-console-audit',
      partitions: 6,
    });
    expect(c.window.graceMs).toBe(5 * 60_000);
    expect(c.plan.dimensions.get('api_calls')).toEqual({
      name: 'api_calls',
      model: 'hourly',
      aggregation: 'sum',
      unit: 1,
      unitMicros: 1_000_000n,
      rounding: 'floor',
      zeroRecords: false,
      productCode: 'prod-x',
    });
  });

  it('lists every violation at once, each with its key', () => {
    const badPlan = writeTempJson('bad-plan.json', {
      productCode: '',
      dimensions: [{ name: 'a b', aggregation: 'avg' }, { name: 'x' }, { name: 'x' }],
    });
    const issues = issuesOf(() =>
      loadConfig(['processor', 'worker'], {
        REDIS_URL: 'http://nope',
        METERLINE_PLAN: badPlan,
        METERLINE_COMMIT_INTERVAL: 'soon',
        METERLINE_TOPIC_USAGE: 'bad topic!',
      }),
    );
    const keys = issues.map((i) => i.split(':')[0]);
    expect(keys).toEqual(
      expect.arrayContaining([
        'KAFKA_BROKERS',
        'REDIS_URL',
        'METERLINE_COMMIT_INTERVAL',
        'METERLINE_TOPIC_USAGE',
        'AWS_REGION',
      ]),
    );
    const planIssues = issues.filter((i) => i.startsWith(`metering plan ${badPlan}`));
    expect(planIssues.map((i) => i.split(': ')[1])).toEqual(
      expect.arrayContaining([
        'productCode',
        'dimensions.0.name',
        'dimensions.0.aggregation',
        'dimensions.2.name',
      ]),
    );
  });

  it('registration limits: defaults, overrides and refusals', () => {
    const registration = { REDIS_URL: base.REDIS_URL, METERLINE_PLAN: plan, AWS_REGION: 'us-east-1' };
    const c = loadConfig(['registration'], {
      ...registration,
      METERLINE_REGISTRATION_RATE_PER_ADDRESS: '3',
      METERLINE_REGISTRATION_RATE_TOTAL: '100',
      METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS: '1',
    });
    expect(c.registration).toMatchObject({ ratePerAddress: 3, rateTotal: 100, trustedProxyHops: 1 });
    const issues = issuesOf(() =>
      loadConfig(['registration'], {
        ...registration,
        METERLINE_REGISTRATION_RATE_PER_ADDRESS: '0',
        METERLINE_REGISTRATION_RATE_TOTAL: 'many',
        METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS: '-1',
      }),
    );
    expect(issues.map((i) => i.split(':')[0]).sort()).toEqual([
      'METERLINE_REGISTRATION_RATE_PER_ADDRESS',
      'METERLINE_REGISTRATION_RATE_TOTAL',
      'METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS',
    ]);
  });

  it('asks registration for what it uses: no Kafka, but a Region for ResolveCustomer', () => {
    const registration = { REDIS_URL: base.REDIS_URL, METERLINE_PLAN: plan };
    expect(issuesOf(() => loadConfig(['registration'], registration))).toEqual([
      'AWS_REGION: required by registration (it calls ResolveCustomer)',
    ]);
    const c = loadConfig(['registration'], {
      ...registration,
      AWS_REGION: 'us-east-1',
      METERLINE_REGISTRATION_REDIRECT_URL: 'https://app.example.com/welcome',
      METERLINE_SNS_TOPIC_ARNS:
        'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-p1,arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-p1',
      METERLINE_EVENTS_API_KEY: 'x'.repeat(32),
      METERLINE_HANDOFF_SIGNING_SECRET: 'h'.repeat(32),
    });
    expect(c.registration).toEqual({
      port: 8080,
      ratePerAddress: 10,
      rateTotal: 600,
      trustedProxyHops: 0,
      redirectUrl: 'https://app.example.com/welcome',
      snsTopicArns: [
        'arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-p1',
        'arn:aws:sns:us-east-1:287250355862:aws-mp-entitlement-notification-p1',
      ],
      eventsApiKey: 'x'.repeat(32),
      handoffSecret: 'h'.repeat(32),
    });
    const issues = issuesOf(() =>
      loadConfig(['registration'], {
        ...registration,
        METERLINE_REGISTRATION_LISTEN_PORT: '70000',
        METERLINE_REGISTRATION_REDIRECT_URL: 'javascript:alert(1)',
        METERLINE_SNS_TOPIC_ARNS: 'my-topic',
        METERLINE_EVENTS_API_KEY: 'short',
      }),
    );
    expect(issues.map((i) => i.split(':')[0]).sort()).toEqual([
      'AWS_REGION',
      'METERLINE_EVENTS_API_KEY',
      'METERLINE_HANDOFF_SIGNING_SECRET',
      'METERLINE_REGISTRATION_LISTEN_PORT',
      'METERLINE_REGISTRATION_REDIRECT_URL',
      'METERLINE_SNS_TOPIC_ARNS',
    ]);
    // The hand-off signing secret: required with a redirect URL and by the verifier, at least 32 bytes.
    const redirecting = {
      ...registration,
      AWS_REGION: 'us-east-1',
      METERLINE_REGISTRATION_REDIRECT_URL: 'https://a.example/w',
    };
    expect(issuesOf(() => loadConfig(['registration'], redirecting))).toEqual([
      'METERLINE_HANDOFF_SIGNING_SECRET: required with METERLINE_REGISTRATION_REDIRECT_URL (it signs the hand-off token)',
    ]);
    expect(
      issuesOf(() =>
        loadConfig(['registration'], { ...redirecting, METERLINE_HANDOFF_SIGNING_SECRET: 'h'.repeat(31) }),
      ),
    ).toEqual(['METERLINE_HANDOFF_SIGNING_SECRET: at least 32 bytes (an HS256 key)']);
    expect(issuesOf(() => loadConfig(['handoff'], registration))).toEqual([
      'METERLINE_HANDOFF_SIGNING_SECRET: required to verify hand-off tokens',
    ]);
    // SNS topics: unset means AWS Marketplace's (empty list here), '*' alone is any topic, never mixed.
    const withRegion = { ...registration, AWS_REGION: 'us-east-1' };
    expect(loadConfig(['registration'], withRegion).registration.snsTopicArns).toEqual([]);
    expect(
      loadConfig(['registration'], { ...withRegion, METERLINE_SNS_TOPIC_ARNS: '*' }).registration
        .snsTopicArns,
    ).toBe('*');
    for (const mixed of ['*,arn:aws:sns:us-east-1:111122223333:t', 'arn:aws:sns:us-east-1:111122223333:*']) {
      expect(
        issuesOf(() => loadConfig(['registration'], { ...withRegion, METERLINE_SNS_TOPIC_ARNS: mixed })),
      ).toEqual(["METERLINE_SNS_TOPIC_ARNS: comma-separated SNS topic ARNs, or '*' alone for any topic"]);
    }
    // The processor and the worker still need Kafka.
    expect(issuesOf(() => loadConfig(['processor'], registration))).toEqual([
      'KAFKA_BROKERS: required: comma-separated host:port list',
    ]);
  });

  it('layers the environment over a config file and rejects unknown keys in it', () => {
    const file = writeTempJson('meterline.json', {
      ...base,
      METERLINE_WINDOW_GRACE: '10m',
      METERLINE_TOPIC_USAGE: 'from-file',
    });
    const c = loadConfig(['processor'], { METERLINE_CONFIG: file, METERLINE_TOPIC_USAGE: 'from-env' });
    expect(c.window.graceMs).toBe(10 * 60_000);
    expect(c.topics.usage).toBe('from-env');
    const typo = writeTempJson('typo.json', { ...base, METERLINE_GRASE: '1m' });
    expect(issuesOf(() => loadConfig(['processor'], { METERLINE_CONFIG: typo }))).toEqual([
      'METERLINE_GRASE: unknown key',
    ]);
  });

  it('refuses window bounds that leave no time to reach AWS', () => {
    expect(issuesOf(() => loadConfig(['processor'], { ...base, METERLINE_WINDOW_MAX_DELAY: '23h' }))).toEqual(
      [expect.stringMatching(/^METERLINE_WINDOW_MAX_DELAY: .*24h/)],
    );
    expect(issuesOf(() => loadConfig(['processor'], { ...base, METERLINE_WINDOW_GRACE: '4h' }))).toEqual([
      'METERLINE_WINDOW_GRACE: must not exceed METERLINE_WINDOW_MAX_DELAY',
    ]);
  });

  it('bounds Kafka sends: a deadline per send, and a longer one before /healthz fails', () => {
    expect(loadConfig(['processor'], base).produce).toEqual({ timeoutMs: 10_000, unhealthyAfterMs: 300_000 });
    expect(
      issuesOf(() =>
        loadConfig(['processor'], {
          ...base,
          METERLINE_PRODUCE_TIMEOUT: '500ms',
          METERLINE_PRODUCE_UNHEALTHY_AFTER: '400ms',
        }),
      ),
    ).toEqual([
      'METERLINE_PRODUCE_TIMEOUT: must be at least 1s',
      'METERLINE_PRODUCE_UNHEALTHY_AFTER: must be longer than METERLINE_PRODUCE_TIMEOUT (one failed send must not restart the pod)',
    ]);
  });

  it('bounds Redis commands: 5s by default, never 0 (which would turn the timeout off)', () => {
    expect(loadConfig(['processor'], base).redis.commandTimeoutMs).toBe(5_000);
    expect(
      loadConfig(['processor'], { ...base, METERLINE_REDIS_COMMAND_TIMEOUT: '100ms' }).redis.commandTimeoutMs,
    ).toBe(100);
    for (const value of ['0s', '0ms', '99ms', '0.01s']) {
      expect(
        issuesOf(() => loadConfig(['processor'], { ...base, METERLINE_REDIS_COMMAND_TIMEOUT: value })),
      ).toEqual(['METERLINE_REDIS_COMMAND_TIMEOUT: must be at least 100ms (0 would turn the timeout off)']);
    }
    expect(
      issuesOf(() => loadConfig(['processor'], { ...base, METERLINE_REDIS_COMMAND_TIMEOUT: '-1s' })),
    ).toEqual([expect.stringMatching(/^METERLINE_REDIS_COMMAND_TIMEOUT: must be a duration/)]);
  });

  it('GetEntitlements: hourly refresh by default, never more often than a minute, and its endpoint override', () => {
    const reg = { REDIS_URL: base.REDIS_URL, METERLINE_PLAN: plan, AWS_REGION: 'us-east-1' };
    expect(loadConfig(['registration'], reg).entitlements).toEqual({
      endpoint: undefined,
      refreshIntervalMs: 3_600_000,
    });
    expect(
      loadConfig(['registration'], {
        ...reg,
        METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: '15m',
        AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: 'http://127.0.0.1:4566',
      }).entitlements,
    ).toEqual({ endpoint: 'http://127.0.0.1:4566', refreshIntervalMs: 900_000 });
    expect(
      issuesOf(() =>
        loadConfig(['registration'], { ...reg, METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: '30s' }),
      ),
    ).toEqual(['METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: must be at least 1m']);
    expect(
      issuesOf(() =>
        loadConfig(['registration'], {
          ...reg,
          AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: 'not a url',
        }),
      ).map((i) => i.split(':')[0]),
    ).toEqual(['AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE']);
  });

  it('builds Kafka TLS and SASL options, and lists every mistake in them', () => {
    const ok = loadConfig(['processor'], {
      ...base,
      KAFKA_SSL: 'true',
      KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
      KAFKA_SASL_USERNAME: 'meterline',
      KAFKA_SASL_PASSWORD: 'pw',
    });
    expect(ok.kafka.security).toEqual({
      ssl: true,
      sasl: { mechanism: 'scram-sha-512', username: 'meterline', password: 'pw' },
    });
    expect(loadConfig(['processor'], base).kafka.security).toEqual({});
    expect(
      issuesOf(() =>
        loadConfig(['processor'], {
          ...base,
          KAFKA_SSL_CA_FILE: '/nonexistent/ca.pem',
          KAFKA_SASL_MECHANISM: 'gssapi',
          REDIS_TLS_CA_FILE: '/nonexistent/redis-ca.pem',
        }),
      ),
    ).toEqual([
      'KAFKA_SSL_CA_FILE: cannot read /nonexistent/ca.pem (ENOENT)',
      'KAFKA_SASL_MECHANISM: must be one of plain, scram-sha-256, scram-sha-512, aws-msk-iam',
      'KAFKA_SASL_USERNAME: required with KAFKA_SASL_MECHANISM',
      'KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM',
      'REDIS_TLS_CA_FILE: /nonexistent/redis-ca.pem does not exist',
    ]);
  });

  // Issue 20: a bare number was read as milliseconds, so METERLINE_WINDOW_GRACE=300 meant 0.3 s.
  it('refuses a duration without a unit, naming the key', () => {
    for (const value of ['300', '0', '1.5']) {
      expect(issuesOf(() => loadConfig(['processor'], { ...base, METERLINE_WINDOW_GRACE: value }))).toEqual([
        `METERLINE_WINDOW_GRACE: needs a unit, like 300ms, 30s, 5m or 2h (got "${value}")`,
      ]);
    }
    expect(loadConfig(['processor'], { ...base, METERLINE_WINDOW_GRACE: '300ms' }).window.graceMs).toBe(300);
  });

  // Issue 20: KAFKA_BROKERS=broker was accepted, then kafkajs looped on "Port should be >= 0".
  it('refuses Kafka brokers without a port', () => {
    expect(issuesOf(() => loadConfig(['processor'], { ...base, KAFKA_BROKERS: 'broker' }))).toEqual([
      'KAFKA_BROKERS: "broker" has no port: write host:port, such as broker:9092',
    ]);
    expect(
      issuesOf(() => loadConfig(['processor'], { ...base, KAFKA_BROKERS: 'a:9092, b:x, c:70000' })),
    ).toEqual([
      'KAFKA_BROKERS: "b:x" has no port: write host:port, such as b:9092',
      'KAFKA_BROKERS: "c:70000" has no port: write host:port, such as c:9092',
    ]);
    expect(
      loadConfig(['processor'], { ...base, KAFKA_BROKERS: '[::1]:9092,k-0.k:19092' }).kafka.brokers,
    ).toEqual(['[::1]:9092', 'k-0.k:19092']);
  });

  // Issue 20: a misspelled METERLINE_* variable was ignored in silence.
  it('warns about unknown METERLINE_* variables, with the closest known name', () => {
    const c = loadConfig(['processor'], {
      ...base,
      METERLINE_WINDOW_GRAC: '1m',
      METERLINE_OPS_PROT: '1',
      METERLINE_XYZZY: '1',
      // Read by tools and the chart, not by the config: never warned about.
      METERLINE_JAEGER_URL: 'http://127.0.0.1:16686',
      METERLINE_REDIS_PASSWORD: 'pw',
      METERLINE_CONFIG: '',
    });
    expect(c.warnings).toEqual([
      'METERLINE_OPS_PROT is not a meterline setting (did you mean METERLINE_OPS_PORT?)',
      'METERLINE_WINDOW_GRAC is not a meterline setting (did you mean METERLINE_WINDOW_GRACE?)',
      'METERLINE_XYZZY is not a meterline setting',
    ]);
    expect(loadConfig(['processor'], base).warnings).toEqual([]);
  });

  // Issue 20: processor and worker both took 9464, so the second one on a host died with EADDRINUSE.
  it('gives each role its own default ops port', () => {
    const worker = { ...base, AWS_REGION: 'us-east-1' };
    expect(loadConfig(['processor'], base).opsPort).toBe(9464);
    expect(loadConfig(['processor', 'worker'], worker).opsPort).toBe(9464);
    expect(loadConfig(['worker'], worker).opsPort).toBe(9465);
    expect(loadConfig(['registration'], worker).opsPort).toBe(9466);
    expect(loadConfig(['worker'], { ...worker, METERLINE_OPS_PORT: '9500' }).opsPort).toBe(9500);
    expect(loadConfig(['worker'], { ...worker, METERLINE_OPS_PORT: 'off' }).opsPort).toBeUndefined();
  });

  it('needs AWS_REGION and a customers file for the worker only', () => {
    expect(() => loadConfig(['processor'], base)).not.toThrow();
    const c = loadConfig(['worker'], { ...base, AWS_REGION: 'us-east-1', METERLINE_CUSTOMERS: customers });
    expect(Object.keys(c.customers)).toEqual(['t1']);
  });
});

describe('metering plan', () => {
  it('reports every mistake of a full plan in one message, each with its path', () => {
    let message = '';
    try {
      parsePlan({
        products: [
          {
            productCode: 'prod-a',
            dimensions: [
              { name: 'seats', model: 'weekly' },
              { name: 'storage', unit: 0.0000001 },
              { name: 'gb', model: 'contract', aggregation: 'max' },
            ],
          },
          { productCode: 'prod-a', dimensions: [{ name: 'seats', rounding: 'up', zeroRecords: 'yes' }] },
          { dimensions: [] },
        ],
      });
    } catch (error) {
      message = (error as Error).message;
    }
    for (const expected of [
      'products.0.dimensions.0.model',
      'products.0.dimensions.1.unit: 1e-7 has more than 6 decimals',
      'products.0.dimensions.2.aggregation: a contract dimension sums usage over its period',
      'products.1.productCode: duplicate product "prod-a"',
      'products.1.dimensions.0.name: duplicate dimension "seats"',
      'products.1.dimensions.0.rounding',
      'products.1.dimensions.0.zeroRecords',
      'products.2.productCode',
      'products.2.dimensions',
    ]) {
      expect(message).toContain(expected);
    }
  });

  it('keeps the simple form valid, with defaults per aggregation', () => {
    const plan = parsePlan({
      productCode: 'p',
      dimensions: [{ name: 'calls' }, { name: 'peak', aggregation: 'max' }],
    });
    expect(plan.products.map((p) => p.productCode)).toEqual(['p']);
    expect(plan.dimensions.get('calls')).toMatchObject({
      model: 'hourly',
      rounding: 'floor',
      unitMicros: 1_000_000n,
    });
    expect(plan.dimensions.get('peak')).toMatchObject({ rounding: 'ceil', productCode: 'p' });
    expect(
      issuesOf(() => parsePlan({ productCode: 'p', dimensions: [{ name: 'a' }], products: [] })),
    ).toContain('(root): use either {productCode, dimensions} or {products}, not both');
  });

  it('checks customer contracts against the plan', () => {
    const contractPlan = writeTempJson('contract-plan.json', {
      productCode: 'prod-x',
      dimensions: [{ name: 'api_calls' }, { name: 'gb', model: 'contract' }],
    });
    const customers = writeTempJson('contract-customers.json', {
      acme: {
        customerIdentifier: 'c-1',
        contract: { start: '2026-01-01T00:00:00Z', entitlements: { gb: 100, api_calls: 5 } },
      },
    });
    expect(
      issuesOf(() =>
        loadConfig(['processor'], { ...base, METERLINE_PLAN: contractPlan, METERLINE_CUSTOMERS: customers }),
      ),
    ).toEqual([
      'customers file: acme.contract.entitlements.api_calls: not a contract dimension of the metering plan',
    ]);
  });
});

describe('customers file', () => {
  it('accepts the 2026 form and the legacy form, never a mix', () => {
    expect(() =>
      parseCustomers({
        a: { customerAwsAccountId: '123456789012', licenseArn: 'arn:aws:license-manager::1:license:l-1' },
        b: { customerIdentifier: 'legacy-id' },
      }),
    ).not.toThrow();
    expect(() =>
      parseCustomers({
        c: {
          customerAwsAccountId: '123456789012',
          customerIdentifier: 'x',
          licenseArn: 'arn:aws:license-manager::1',
        },
      }),
    ).toThrow(ConfigError);
    expect(() => parseCustomers({ d: { customerAwsAccountId: '12345' } })).toThrow(ConfigError);
  });
});

describe('published schemas', () => {
  it('match the zod definitions the code validates with', () => {
    for (const [name, schema] of Object.entries(generatedSchemas())) {
      const onDisk = JSON.parse(readFileSync(new URL(`../../../schemas/${name}`, import.meta.url), 'utf8'));
      expect(onDisk, `schemas/${name} is stale: run npm run schemas`).toEqual(schema);
    }
  });

  it('accept the demo plan and customers', () => {
    const read = (p: string) =>
      JSON.parse(readFileSync(new URL(`../../../deploy/demo/${p}`, import.meta.url), 'utf8'));
    expect(() => parsePlan(read('plan.json'))).not.toThrow();
    expect(() => parseCustomers(read('customers.json'))).not.toThrow();
  });
});
