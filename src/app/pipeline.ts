/**
 * Wires the stages from a validated config: the processor (windowing + commit stage) and the worker.
 * `meterline run` starts both in one process; each can also run alone.
 */
import { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { CommitStage } from '../commit/commit-stage.ts';
import type { Config } from '../config/config.ts';
import type { StreamTask } from '../engine/stream-task.ts';
import { StreamsApp } from '../engine/streams-app.ts';
import { createAvroDecoder } from '../ingest/avro.ts';
import { EventDecoder } from '../ingest/decoder.ts';
import { checkChangelogTopic } from '../kafka/changelog-topic.ts';
import { createKafka } from '../kafka/client.ts';
import { GuardedProducer, ProduceHealth } from '../kafka/guarded-producer.ts';
import { ensureTopics, pipelineTopics } from '../kafka/topics.ts';
import { checkUsageRetention } from '../kafka/usage-retention.ts';
import type { Logger } from '../log.ts';
import { DEFAULT_ACCEPTANCE_WINDOW_MS } from '../metering/aws-window.ts';
import { DlqPublisher } from '../metering/dlq-publisher.ts';
import { reportBuildInfo } from '../observability/build-info.ts';
import { collectProcessMetrics } from '../observability/metrics.ts';
import { type OpsServer, startOpsServer } from '../observability/ops-server.ts';
import { BacklogMonitor } from '../reconcile/backlog.ts';
import { GapMonitor } from '../reconcile/gaps.ts';
import { createRedis, type ScriptedRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory, indexFileTenants } from '../state/customer-directory.ts';
import { EntitlementStore } from '../state/entitlement-store.ts';
import { Ledger } from '../state/ledger.ts';
import { emptyStats, type ProcessorStats } from '../state/processor-stats.ts';
import { SharedRateLimiter } from '../state/rate-limiter.ts';
import { WindowStore } from '../state/window-store.ts';
import { MeteringWorker } from '../submit/worker.ts';
import { HOUR_MS } from '../time/hours.ts';
import { meteringTopology } from './metering-topology.ts';

export interface RunningProcessor {
  app: StreamsApp;
  stats: ProcessorStats;
  commitStage: CommitStage;
}

export interface RunningPipeline {
  processor?: RunningProcessor;
  worker?: MeteringWorker;
  /** `/metrics`, `/healthz`, `/readyz` (absent with METERLINE_OPS_PORT=off). */
  ops?: OpsServer;
  stop(): Promise<void>;
}

export interface PipelineOptions {
  processor: boolean;
  worker: boolean;
  now?: () => number;
  /** JSON only by default; pass one with an Avro decoder for Confluent-framed Avro. */
  decoder?: EventDecoder;
  /** Test seam: runs before each batch commit. */
  beforeCommit?: (task: StreamTask) => Promise<void>;
  /** Test seam: runs after an hour is frozen, and after its records are on the submission topic. */
  commitFaults?: { afterFreeze?: () => void; afterEmit?: () => void };
}

export async function startPipeline(
  config: Config,
  logger: Logger,
  options: PipelineOptions,
): Promise<RunningPipeline> {
  const kafka = createKafka({ ...config.kafka, logger });
  await ensureTopics(kafka, pipelineTopics(config.topics));
  const redis: ScriptedRedis = createRedis(config.redis.url, config.redis);
  const keys = new Keys(config.redis.prefix);
  const directory = new CustomerDirectory(redis, keys);
  // One producer per stage, each with bounded sends: a topic that cannot be written (deleted, denied)
  // stops only the stage that writes to it, loudly (/readyz, then /healthz, and a metric). Idempotent,
  // so their own retries neither duplicate nor reorder (the submission topic is the durable record of
  // what was frozen).
  const health = new ProduceHealth(config.produce.unhealthyAfterMs);
  const producers: GuardedProducer[] = [];
  const producer = (name: string) => {
    const p = new GuardedProducer({
      kafka,
      name,
      idempotent: true,
      timeoutMs: config.produce.timeoutMs,
      health,
      logger: logger.child({ stage: name }),
    });
    producers.push(p);
    return p;
  };
  const stops: (() => Promise<void>)[] = [];
  const running: RunningPipeline = {
    async stop() {
      running.ops?.setReady(false);
      for (const stop of stops.reverse())
        await stop().catch((err) => logger.warn({ err }, 'error while stopping'));
      for (const p of producers)
        await p.disconnect().catch((err) => logger.warn({ err }, 'error while stopping'));
      redis.disconnect();
      await running.ops?.close();
    },
  };
  if (config.opsPort !== undefined) {
    collectProcessMetrics();
    running.ops = await startOpsServer(config.opsPort);
    running.ops.addCheck(health);
    logger.info({ port: running.ops.port }, 'metrics and health on /metrics, /healthz, /readyz');
  }

  try {
    if (options.processor || options.worker) {
      // A directory of the earlier form (one entry per tenant) moves to one entry per product, once.
      const moved = await directory.migrate();
      if (moved > 0) logger.info({ entries: moved }, 'customer directory migrated to one entry per product');
    }
    if (options.processor) {
      // File tenants honour lifecycle events: registration finds them by this index.
      await indexFileTenants(directory, config);
      const windows = new WindowStore(redis, keys, {
        dedupeTtlMs: 48 * HOUR_MS,
        finalizedTtlMs: 48 * HOUR_MS,
        dedupeMemory: { hotIds: config.dedupe.memoryIds, spillDir: config.dedupe.spillDir },
      });
      const admin = kafka.admin();
      await admin.connect();
      stops.push(() => admin.disconnect());
      // Invariant 5: a replay after a Redis loss re-reads the usage topic back to the horizon the
      // topology gives the store (AWS's acceptance window): refuse a topic that no longer holds it.
      if (!config.allowShortUsageRetention) {
        await checkUsageRetention(admin, {
          topic: config.topics.usage,
          replayHorizonMs: DEFAULT_ACCEPTANCE_WINDOW_MS[config.worker.api],
          logger,
        });
      }
      await checkChangelogTopic(admin, {
        usageTopic: config.topics.usage,
        changelogTopic: config.topics.changelog,
      });
      // The batches' sinks (failed records, misrouted events), apart from the commit stage's submissions.
      const sinks = producer('processor');
      const submissions = producer('commit');
      await Promise.all([sinks.connect(), submissions.connect()]);
      const stats = emptyStats();
      const now = options.now ?? Date.now;
      // The app is created after the topology, which needs its task list: bind late.
      let app: StreamsApp | undefined;
      const metering = meteringTopology({
        config,
        windows,
        kafka,
        decoder:
          options.decoder ??
          new EventDecoder(
            config.schemaRegistryUrl
              ? createAvroDecoder({ registryUrl: config.schemaRegistryUrl })
              : undefined,
          ),
        admin,
        producer: submissions,
        stats,
        logger,
        now,
        tasks: async () => (app ? app.tasks() : []),
        directory,
        entitlements: new EntitlementStore(redis, keys),
        ledger: new Ledger(redis, keys),
        ...(options.commitFaults ? { faults: options.commitFaults } : {}),
      });
      app = new StreamsApp({
        kafka,
        producer: sinks,
        groupId: config.groups.processor,
        sessionTimeoutMs: config.groups.sessionTimeoutMs,
        concurrency: config.groups.concurrency,
        topology: metering.topology,
        logger: logger.child({ stage: 'processor' }),
        now,
        ...(options.beforeCommit ? { beforeCommit: options.beforeCommit } : {}),
      });
      logger.debug({ topology: metering.topology.describe() }, 'topology');
      await metering.refreshPartitions();
      await app.start();
      const started = app;
      stops.push(() => started.stop());
      running.processor = { app, stats, commitStage: metering.commitStage };
    }
    if (options.worker) {
      const client = new MarketplaceMeteringClient({
        ...(config.worker.region ? { region: config.worker.region } : {}),
        ...(config.worker.endpoint ? { endpoint: config.worker.endpoint } : {}),
        // Our own retry loop owns backoff and deadlines; the SDK's would multiply attempts.
        maxAttempts: 1,
        // Without throwOnRequestTimeout the SDK only warns and keeps waiting.
        requestHandler: {
          requestTimeout: config.worker.requestTimeoutMs,
          throwOnRequestTimeout: true,
          connectionTimeout: 3_000,
        },
      });
      const dlqProducer = producer('worker');
      await dlqProducer.connect();
      const worker = new MeteringWorker({
        kafka,
        client,
        ledger: new Ledger(redis, keys),
        dlq: new DlqPublisher(dlqProducer, config.topics.failed),
        customers: config.customerMap,
        directory,
        topic: config.topics.submissions,
        groupId: config.groups.worker,
        sessionTimeoutMs: config.groups.sessionTimeoutMs,
        deadlineMarginMs: 5 * 60_000,
        rateLimiter: new SharedRateLimiter(redis, keys, config.worker.api, { rate: config.worker.rateLimit }),
        api: config.worker.api,
        logger: logger.child({ stage: 'worker' }),
        ...(options.now ? { now: options.now } : {}),
      });
      await worker.start();
      stops.push(async () => {
        await worker.stop();
        client.destroy();
      });
      running.worker = worker;
      // The gap job: each subscribed customer's closed hours were accepted (one worker pod at a time scans).
      const gaps = new GapMonitor({
        config,
        redis,
        keys,
        logger: logger.child({ stage: 'gaps' }),
        ...(options.now ? { now: options.now } : {}),
      });
      gaps.start();
      stops.push(() => gaps.stop());
    }
  } catch (error) {
    await running.stop();
    throw error;
  }
  // The submission backlog from Kafka, seen by processors and workers alike (a stopped worker fleet too).
  if (options.processor || options.worker) {
    const backlog = new BacklogMonitor({
      kafka,
      submissionsTopic: config.topics.submissions,
      failedTopic: config.topics.failed,
      workerGroup: config.groups.worker,
      logger: logger.child({ stage: 'backlog' }),
      ...(options.now ? { now: options.now } : {}),
    });
    await backlog.start();
    stops.unshift(() => backlog.stop());
  }
  reportBuildInfo([...(options.processor ? ['processor'] : []), ...(options.worker ? ['worker'] : [])]);
  running.ops?.setReady(true);
  return running;
}
