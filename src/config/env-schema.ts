/** The configuration keys: each environment variable (or config-file key) with its type, bounds and default. */
import { z } from 'zod';
import { lacksUnit, parseDuration } from './duration.ts';

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined && lacksUnit(text)) {
        ctx.addIssue({ code: 'custom', message: `needs a unit, like 300ms, 30s, 5m or 2h (got "${text}")` });
        return z.NEVER;
      }
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `must be a duration like 30s, 5m or 2h (got "${text}")` });
        return z.NEVER;
      }
      return ms;
    });

const int = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const topic = (fallback: string) =>
  z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,249}$/, 'must be a valid Kafka topic name')
    .default(fallback);

/** Every key this process reads, with its default. README's configuration table mirrors this list. */
export const EnvSchema = z.object({
  // Required by the processor and the worker (checked per role below); registration needs no Kafka.
  KAFKA_BROKERS: z.string().optional(),
  KAFKA_CLIENT_ID: z.string().default('meterline'),
  // TLS and SASL (checked, and turned into client options, by src/kafka/security.ts).
  KAFKA_SSL: z.enum(['true', 'false']).optional(),
  KAFKA_SSL_CA_FILE: z.string().optional(),
  KAFKA_SSL_REJECT_UNAUTHORIZED: z.enum(['true', 'false']).optional(),
  KAFKA_SASL_MECHANISM: z.string().optional(),
  KAFKA_SASL_USERNAME: z.string().optional(),
  KAFKA_SASL_PASSWORD: z.string().optional(),
  // A private CA for rediss:// (TLS is on with a rediss:// URL).
  REDIS_TLS_CA_FILE: z.string().optional(),
  REDIS_URL: z
    .string({ error: 'required: redis://[user:password@]host:port[/db]' })
    .regex(
      /^rediss?:\/\/[^,]*(,\s*rediss?:\/\/[^,]*)*$/,
      'must be a redis:// or rediss:// URL (cluster: a comma-separated list of them)',
    ),
  // Redis Cluster: REDIS_URL may then list several seed nodes, `redis://h1:p1,redis://h2:p2`.
  REDIS_CLUSTER: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  SCHEMA_REGISTRY_URL: z.url().optional(),
  AWS_REGION: z.string().optional(),
  AWS_ENDPOINT_URL_MARKETPLACE_METERING: z.url().optional(),
  // The SDK's own name for the Entitlement Service's endpoint override (GetEntitlements).
  AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE: z.url().optional(),
  METERLINE_PLAN: z
    .string({ error: 'required: path of the metering plan (JSON or YAML)' })
    .min(1, 'required: path of the metering plan (JSON or YAML)'),
  METERLINE_CUSTOMERS: z.string().optional(),
  METERLINE_TOPIC_USAGE: topic('usage-events'),
  METERLINE_TOPIC_SUBMISSIONS: topic('metering-submissions'),
  METERLINE_TOPIC_FAILED: topic('metering-failed'),
  // Compacted: the frozen hours and metering-model state the processor rebuilds Redis from after a loss.
  METERLINE_TOPIC_CHANGELOG: topic('meterline-window-changelog'),
  // The console's audit log: who redrove what (a Kafka topic: it outlives a Redis loss, see src/console/audit.ts).
  METERLINE_TOPIC_AUDIT: topic('meterline-console-audit'),
  METERLINE_TOPIC_PARTITIONS: int(6, 1, 1000),
  // The processor refuses a usage topic that keeps less than a replay after a Redis loss needs
  // (src/kafka/usage-retention.ts); true starts it anyway, accepting that such a replay may lose usage.
  METERLINE_ALLOW_SHORT_RETENTION: z
    .enum(['true', 'false'])
    .default('false')
    .transform((v) => v === 'true'),
  METERLINE_REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits and _ . : - only')
    .default('meterline'),
  METERLINE_PROCESSOR_GROUP: z.string().min(1).default('meterline-processor'),
  METERLINE_WORKER_GROUP: z.string().min(1).default('meterline-worker'),
  METERLINE_SESSION_TIMEOUT: duration('30s'),
  // A Redis reply lost on a silent network path would otherwise hang the stage for ever (min 100ms: 0 would
  // turn the timeout off).
  METERLINE_REDIS_COMMAND_TIMEOUT: duration('5s'),
  METERLINE_PROCESSOR_CONCURRENCY: int(3, 1, 64),
  // Dedupe id hashes a processor keeps in memory; older ones spill to METERLINE_DEDUPE_SPILL_DIR.
  METERLINE_DEDUPE_MEMORY_IDS: int(1_000_000, 10_000, 1_000_000_000),
  METERLINE_DEDUPE_SPILL_DIR: z.string().min(1).optional(),
  METERLINE_WINDOW_GRACE: duration('5m'),
  METERLINE_WINDOW_MAX_DELAY: duration('3h'),
  METERLINE_MAX_OUT_OF_ORDERNESS: duration('1m'),
  METERLINE_IDLE_TIMEOUT: duration('1m'),
  METERLINE_LATE_POLICY: z.enum(['carry-forward', 'dead-letter']).default('carry-forward'),
  METERLINE_COMMIT_INTERVAL: duration('5s'),
  METERLINE_MAX_FUTURE_SKEW: duration('5m'),
  METERLINE_SUBMIT_MARGIN: duration('1h'),
  METERLINE_MAX_MESSAGE_BYTES: int(16_384, 256, 1_048_576),
  // saas: BatchMeterUsage for the buyers in the customers file or the registered ones; container: MeterUsage from the buyer's account.
  METERLINE_METERING_MODE: z.enum(['saas', 'container']).default('saas'),
  // Unset: a port per role (DEFAULT_OPS_PORT), so a processor and a worker on one host both start.
  METERLINE_OPS_PORT: z
    .string()
    .optional()
    .refine(
      (v) => v === undefined || v === 'off' || (/^\d+$/.test(v) && Number(v) <= 65_535),
      'a port (0 = any free one) or "off"',
    ),
  // A Kafka send not done by then fails (bounded retries included): its stage keeps the input and retries,
  // and /readyz fails until a send succeeds.
  METERLINE_PRODUCE_TIMEOUT: duration('10s'),
  // Sends failing this long without a success fail /healthz too, so Kubernetes restarts the pod.
  METERLINE_PRODUCE_UNHEALTHY_AFTER: duration('5m'),
  // A call AWS has not answered by then is retried (the record's id makes the resend safe).
  METERLINE_AWS_REQUEST_TIMEOUT: duration('10s'),
  METERLINE_RATE_LIMIT: z.coerce
    .number({ error: 'must be a number of requests per second' })
    .positive()
    .max(1000)
    .default(10),
  // Registration: the buyer-facing HTTP port, where the buyer goes next, and who may send lifecycle events.
  METERLINE_REGISTRATION_LISTEN_PORT: int(8080, 0, 65_535),
  // Registration POSTs per minute, shared by every replica through Redis: from one client address (a
  // buyer needs one or two; a retry or a colleague behind the same NAT a few more), and from everyone (a
  // seller's launch-day burst, well under ResolveCustomer's quota).
  METERLINE_REGISTRATION_RATE_PER_ADDRESS: int(10, 1, 10_000),
  METERLINE_REGISTRATION_RATE_TOTAL: int(600, 1, 1_000_000),
  // How many proxies in front of the service append to X-Forwarded-For (an ingress: 1). 0: the header is
  // ignored and the socket's address is the client, since anyone can send the header.
  METERLINE_REGISTRATION_TRUSTED_PROXY_HOPS: int(0, 0, 10),
  METERLINE_REGISTRATION_REDIRECT_URL: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .optional(),
  // Unset: AWS Marketplace's own topics for the plan's products; '*' (alone) takes any topic, on purpose.
  METERLINE_SNS_TOPIC_ARNS: z
    .string()
    .regex(
      /^(\*|arn:aws[a-z-]*:sns:[^,*]+(,arn:aws[a-z-]*:sns:[^,*]+)*)$/,
      "comma-separated SNS topic ARNs, or '*' alone for any topic",
    )
    .optional(),
  METERLINE_EVENTS_API_KEY: z.string().min(24, 'at least 24 characters').optional(),
  // The seller's backend sends this key to POST /marketplace/link; unset, the endpoint refuses every call.
  METERLINE_LINK_API_KEY: z.string().min(24, 'at least 24 characters').optional(),
  // Registration: how often every contract buyer's entitlements are fetched again (GetEntitlements), on
  // top of registration and entitlement events; a safety net for a missed event (checked below).
  METERLINE_ENTITLEMENTS_REFRESH_INTERVAL: duration('1h'),
  // HS256 key of the hand-off token to the onboarding page (src/subscribe/handoff.ts); checked below.
  METERLINE_HANDOFF_SIGNING_SECRET: z.string().optional(),
  // The console (`meterline console`): its port, and who signs in (checked in ./console.ts).
  METERLINE_CONSOLE_PORT: z.string().optional(),
  // Jaeger's query API, for the console's record pages (and `meterline trace`, which also takes --jaeger).
  METERLINE_JAEGER_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  METERLINE_CONSOLE_TOKENS: z.string().optional(),
  METERLINE_CONSOLE_IDENTITY_HEADER: z.string().optional(),
  METERLINE_CONSOLE_OPERATORS: z.string().optional(),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

export type Env = z.output<typeof EnvSchema>;

/** Every key the schema knows. */
export const ENV_KEYS = Object.keys(EnvSchema.shape) as (keyof Env)[];
