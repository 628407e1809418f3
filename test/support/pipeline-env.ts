/**
 * One isolated pipeline setup per test: its own topics, consumer groups, Redis prefix, plan and customers
 * files, as environment variables, so the same settings drive an in-process pipeline or the real CLI in a
 * child process.
 */
import type { Kafka, KafkaMessage } from 'kafkajs';
import { type Config, loadConfig, type Role } from '../../src/config/config.ts';
import type { RunningEmulator } from '../../src/emulator/server.ts';
import { readAllMessages } from '../../src/kafka/read-topic.ts';
import { ensureTopics, pipelineTopics } from '../../src/kafka/topics.ts';
import { recordId, type SubmissionRecord } from '../../src/metering/submission-record.ts';
import type { RawEvent } from '../../src/produce/synthetic.ts';
import { hourIso, hourStart } from '../../src/time/hours.ts';
import { deleteKeys, deleteTopics, stackEnv, uniqueId, waitFor, writeTempJson } from './harness.ts';

export interface TestPipeline {
  run: string;
  env: Record<string, string>;
  config(roles?: Role[]): Config;
  topics: { usage: string; submissions: string; failed: string; changelog: string };
  createTopics(kafka: Kafka): Promise<void>;
  cleanup(kafka: Kafka): Promise<void>;
}

export const TEST_CUSTOMERS = {
  acme: {
    customerAwsAccountId: '111111111111',
    licenseArn: 'arn:aws:license-manager::111111111111:license:l-a1',
  },
  globex: {
    customerAwsAccountId: '222222222222',
    licenseArn: 'arn:aws:license-manager::222222222222:license:l-b2',
  },
  initech: {
    customerAwsAccountId: '333333333333',
    licenseArn: 'arn:aws:license-manager::333333333333:license:l-c3',
  },
  umbrella: { customerIdentifier: 'cust-umbrella' },
};

export function testPipeline(
  label: string,
  options: {
    partitions?: number;
    /** Dimensions of the plan: hourly sums unless they say otherwise (any plan field may be given). */
    dimensions?: ({ name: string; aggregation?: 'sum' | 'max' } & Record<string, unknown>)[];
    customers?: Record<string, unknown>;
    /**
     * More tenants to map in the customers file (legacy identifiers `cust-<tenant>`): usage of a tenant
     * without an AWS identity is held, not emitted.
     */
    tenants?: readonly string[];
    env?: Record<string, string>;
  } = {},
): TestPipeline {
  const run = uniqueId(label);
  const topics = {
    usage: `${run}-usage`,
    submissions: `${run}-submissions`,
    failed: `${run}-failed`,
    changelog: `${run}-changelog`,
  };
  const partitions = options.partitions ?? 3;
  const plan = writeTempJson('plan.json', {
    productCode: 'prod-test',
    dimensions: (options.dimensions ?? [{ name: 'api_calls' }, { name: 'jobs' }]).map((d) => ({
      model: 'hourly',
      aggregation: 'sum',
      ...d,
    })),
  });
  const customers = writeTempJson('customers.json', {
    ...(options.customers ?? TEST_CUSTOMERS),
    ...Object.fromEntries((options.tenants ?? []).map((t) => [t, { customerIdentifier: `cust-${t}` }])),
  });
  const { brokers, redisUrl } = stackEnv();
  const env: Record<string, string> = {
    KAFKA_BROKERS: brokers.join(','),
    REDIS_URL: redisUrl,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    METERLINE_PLAN: plan,
    METERLINE_CUSTOMERS: customers,
    METERLINE_TOPIC_USAGE: topics.usage,
    METERLINE_TOPIC_SUBMISSIONS: topics.submissions,
    METERLINE_TOPIC_FAILED: topics.failed,
    METERLINE_TOPIC_CHANGELOG: topics.changelog,
    METERLINE_TOPIC_PARTITIONS: String(partitions),
    METERLINE_REDIS_PREFIX: run,
    METERLINE_PROCESSOR_GROUP: `${run}-processor`,
    METERLINE_WORKER_GROUP: `${run}-worker`,
    METERLINE_SESSION_TIMEOUT: '6s',
    METERLINE_WINDOW_GRACE: '1s',
    // Test data spans the last three closed hours: only the watermark may close them, not the wall clock.
    METERLINE_WINDOW_MAX_DELAY: '12h',
    METERLINE_MAX_OUT_OF_ORDERNESS: '1s',
    METERLINE_IDLE_TIMEOUT: '2s',
    METERLINE_COMMIT_INTERVAL: '200ms',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    // Any free port: several pipelines share a test process.
    METERLINE_OPS_PORT: '0',
    ...options.env,
  };
  return {
    run,
    env,
    topics,
    config: (roles = ['processor', 'worker']) => loadConfig(roles, env),
    createTopics: async (kafka) => {
      await ensureTopics(kafka, pipelineTopics({ ...topics, partitions }));
    },
    async cleanup(kafka) {
      await deleteTopics(kafka, Object.values(topics));
      await deleteKeys(run);
    },
  };
}

export { readAllMessages } from '../../src/kafka/read-topic.ts';

/**
 * The submission topic, checked for invariant 2: every copy of a record id carries the same quantity.
 * Returns one quantity per record id.
 */
export function frozenRecords(messages: KafkaMessage[]): Map<string, SubmissionRecord> {
  const byId = new Map<string, SubmissionRecord>();
  for (const m of messages) {
    const r = JSON.parse(String(m.value)) as SubmissionRecord;
    const seen = byId.get(r.recordId);
    if (seen && seen.quantity !== r.quantity) {
      throw new Error(`record ${r.recordId} was emitted with ${seen.quantity} and then ${r.quantity}`);
    }
    byId.set(r.recordId, r);
  }
  return byId;
}

/** The AWS identity the emulator records a test tenant under. */
export function awsIdOf(tenant: string): string {
  const m = TEST_CUSTOMERS[tenant as keyof typeof TEST_CUSTOMERS];
  return 'customerAwsAccountId' in m ? m.customerAwsAccountId : m.customerIdentifier;
}

/** What AWS (the emulator) holds: per (AWS id, dimension, hour), keyed as `expectedAccepted` keys it. */
export function acceptedAtAws(emulator: RunningEmulator | undefined): Map<string, number> {
  return new Map(
    emulator?.state
      .snapshot()
      .records.map((r) => [`${r.customer}|${r.dimension}|${r.timestamp}`, r.quantity]),
  );
}

/** What AWS must hold after the events: per (AWS id, dimension, hour), the sum of distinct event ids. */
export function expectedAccepted(events: readonly RawEvent[]): Map<string, number> {
  const seen = new Set<string>();
  const out = new Map<string, number>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const key = `${awsIdOf(e.customer)}|${e.dimension}|${hourIso(hourStart(Date.parse(String(e.timestamp))))}`;
    out.set(key, (out.get(key) ?? 0) + e.quantity);
  }
  return out;
}

/** What each frozen record must hold: per record id, the sum over the events' distinct ids. */
export function expectedFrozen(events: readonly RawEvent[], productCode = 'prod-test'): Map<string, number> {
  const seen = new Set<string>();
  const truth = new Map<string, number>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const id = recordId(productCode, e.customer, e.dimension, hourStart(Date.parse(String(e.timestamp))));
    truth.set(id, (truth.get(id) ?? 0) + e.quantity);
  }
  return truth;
}

/** Waits until the submission topic holds as many records as `truth`, and gives their quantities. */
export async function waitForFrozen(
  kafka: Kafka,
  topic: string,
  truth: ReadonlyMap<string, number>,
  options: { timeoutMs?: number; describe?: () => string } = {},
): Promise<Map<string, number>> {
  const records = await waitFor(
    async () => {
      const r = frozenRecords(await readAllMessages(kafka, topic));
      return r.size >= truth.size ? r : undefined;
    },
    { timeoutMs: options.timeoutMs ?? 240_000, intervalMs: 2_000, describe: options.describe },
  );
  return new Map([...records].map(([id, r]) => [id, r.quantity]));
}

/** The records whose quantity is not the truth's, as "id: billed ≠ expected" (empty when exact). */
export function wrongRecords(
  billed: ReadonlyMap<string, number>,
  truth: ReadonlyMap<string, number>,
): string[] {
  return [...truth]
    .filter(([id, q]) => billed.get(id) !== q)
    .map(([id, q]) => `${id}: ${billed.get(id)} ≠ ${q}`);
}
