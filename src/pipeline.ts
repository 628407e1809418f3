/**
 * Wires the stages from a validated config: the processor (windowing + commit stage) and the worker.
 * `meterline run` starts both in one process; each can also run alone.
 */
import { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { Producer } from 'kafkajs';
import { CommitStage } from './commit/commit-stage.ts';
import type { Config } from './config/config.ts';
import { DlqPublisher } from './dlq/publisher.ts';
import { createKafka, idempotentProducer } from './kafka/client.ts';
import { ensureTopics, pipelineTopics } from './kafka/topics.ts';
import type { Logger } from './log.ts';
import { createRedis, type ScriptedRedis } from './redis/client.ts';
import { Keys } from './redis/keys.ts';
import { Ledger } from './submit/ledger.ts';
import { MeteringWorker } from './submit/worker.ts';
import { HOUR_MS } from './time/hours.ts';
import { WindowingProcessor } from './window/processor.ts';
import { WindowStore } from './window/window-store.ts';

export interface RunningPipeline {
  processor?: WindowingProcessor;
  commitStage?: CommitStage;
  worker?: MeteringWorker;
  stop(): Promise<void>;
}

export interface PipelineOptions {
  processor: boolean;
  worker: boolean;
  now?: () => number;
}

export async function startPipeline(
  config: Config,
  logger: Logger,
  options: PipelineOptions,
): Promise<RunningPipeline> {
  const kafka = createKafka({ brokers: config.kafka.brokers, clientId: config.kafka.clientId, logger });
  await ensureTopics(kafka, pipelineTopics(config.topics));
  const redis: ScriptedRedis = createRedis(config.redis.url);
  const keys = new Keys(config.redis.prefix);
  const producer: Producer = idempotentProducer(kafka);
  await producer.connect();
  const dlq = new DlqPublisher(producer, config.topics.failed);
  const stops: (() => Promise<void>)[] = [];
  const running: RunningPipeline = {
    async stop() {
      for (const stop of stops.reverse())
        await stop().catch((err) => logger.warn({ err }, 'error while stopping'));
      await producer.disconnect();
      redis.disconnect();
    },
  };

  try {
    if (options.processor) {
      const store = new WindowStore(redis, keys, {
        dedupeTtlMs: 48 * HOUR_MS,
        finalizedTtlMs: 48 * HOUR_MS,
      });
      const processor = new WindowingProcessor({
        kafka,
        store,
        dlq,
        plan: config.plan,
        topic: config.topics.usage,
        groupId: config.groups.processor,
        maxFutureSkewMs: config.window.maxFutureSkewMs,
        submitMarginMs: config.window.submitMarginMs,
        maxMessageBytes: config.maxMessageBytes,
        logger: logger.child({ stage: 'processor' }),
        ...(options.now ? { now: options.now } : {}),
      });
      const commitStage = new CommitStage({
        store,
        registry: processor.registry,
        producer,
        topic: config.topics.submissions,
        plan: config.plan,
        ops: processor.ops,
        api: 'BatchMeterUsage',
        graceMs: config.window.graceMs,
        maxDelayMs: config.window.maxDelayMs,
        intervalMs: config.window.commitIntervalMs,
        logger: logger.child({ stage: 'commit' }),
        ...(options.now ? { now: options.now } : {}),
      });
      await processor.start();
      stops.push(() => processor.stop());
      commitStage.start();
      stops.push(() => commitStage.stop());
      running.processor = processor;
      running.commitStage = commitStage;
    }
    if (options.worker) {
      const client = new MarketplaceMeteringClient({
        ...(config.worker.region ? { region: config.worker.region } : {}),
        ...(config.worker.endpoint ? { endpoint: config.worker.endpoint } : {}),
        // Our own retry loop owns backoff and deadlines; the SDK's would multiply attempts.
        maxAttempts: 1,
      });
      const worker = new MeteringWorker({
        kafka,
        client,
        ledger: new Ledger(redis, keys),
        dlq,
        customers: config.customers,
        topic: config.topics.submissions,
        groupId: config.groups.worker,
        deadlineMarginMs: 5 * 60_000,
        logger: logger.child({ stage: 'worker' }),
        ...(options.now ? { now: options.now } : {}),
      });
      await worker.start();
      stops.push(async () => {
        await worker.stop();
        client.destroy();
      });
      running.worker = worker;
    }
  } catch (error) {
    await running.stop();
    throw error;
  }
  return running;
}
