/**
 * The metering topology, as in the diagram:
 *
 *   source usage-events → processor hourly-window [store hourly-windows] → sink failed
 *   punctuator commit-stage (wall clock) → the submissions topic
 *
 * The commit stage produces its records itself: it runs per hour, not per record, and must mark an hour
 * emitted only after the producer's ack.
 */
import type { Admin, Kafka, Producer } from 'kafkajs';
import { CommitStage, type CommitStageOptions, type Subscriber } from '../commit/commit-stage.ts';
import type { Config } from '../config/config.ts';
import type { TaskId } from '../engine/processor.ts';
import type { StreamTask } from '../engine/stream-task.ts';
import { Topology } from '../engine/topology.ts';
import type { EventDecoder } from '../ingest/decoder.ts';
import { readPartition } from '../kafka/read-topic.ts';
import type { Logger } from '../log.ts';
import { DEFAULT_ACCEPTANCE_WINDOW_MS } from '../metering/aws-window.ts';
import {
  type CustomerDirectory,
  type DirectoryEntry,
  type FileTenantStatus,
  isActive,
  mappingOf,
  subscriptionField,
} from '../state/customer-directory.ts';
import type { EntitlementStore } from '../state/entitlement-store.ts';
import { HOURLY_WINDOWS, HourlyWindowStore, type RecoverySource } from '../state/hourly-window-store.ts';
import type { Ledger } from '../state/ledger.ts';
import type { ProcessorStats } from '../state/processor-stats.ts';
import { foldChangelog } from '../state/window-changelog.ts';
import type { WindowStore } from '../state/window-store.ts';
import type { AggregationOp } from '../state/window-types.ts';
import { contractsFromEntitlements } from '../subscribe/entitlements.ts';
import { FAILED_SINK, REPARTITION_SINK, WindowProcessor } from '../window/window-processor.ts';

export interface MeteringTopology {
  topology: Topology;
  commitStage: CommitStage;
  /** Reads the usage topic's partition count (call before the app starts). */
  refreshPartitions: () => Promise<void>;
}

export function meteringTopology(deps: {
  config: Config;
  windows: WindowStore;
  decoder: EventDecoder;
  kafka: Kafka;
  admin: Admin;
  producer: Producer;
  stats: ProcessorStats;
  logger: Logger;
  now: () => number;
  tasks: () => Promise<StreamTask[]>;
  /** Tenants registered through the registration URL (per product subscription), beside the customers file. */
  directory?: CustomerDirectory;
  /** Contract entitlements GetEntitlements returned (registration stores them). */
  entitlements?: Pick<EntitlementStore, 'version' | 'all'>;
  /** The hours AWS accepted, per customer: the commit stage's gauge of customers behind. */
  ledger: Pick<Ledger, 'lastAcceptedOf'>;
  faults?: CommitStageOptions['faults'];
}): MeteringTopology {
  const { config, admin } = deps;
  const ops = new Map<string, AggregationOp>(
    [...config.plan.dimensions.values()].map((d) => [d.name, d.aggregation === 'max' ? 'm' : 's']),
  );
  const recovery = kafkaRecoverySource(deps.kafka, admin, config.groups.processor, config.topics.changelog);
  // The usage topic's partition count, read at start and on every commit punctuation.
  let partitions = 0;
  const refreshPartitions = async () => {
    const [topic] = (await admin.fetchTopicMetadata({ topics: [config.topics.usage] })).topics;
    partitions = topic?.partitions.length ?? 0;
  };

  // The directory is re-read only when a write moved its change counter (one GET per call otherwise), so
  // an unsubscription stops that product's zero records from the next tick on. One entry per product
  // subscription: a buyer of two products has two.
  let registeredCache: { changes: string | null; entries: DirectoryEntry[] } | undefined;
  const registered = async (): Promise<DirectoryEntry[]> => {
    if (!deps.directory) return [];
    const changes = await deps.directory.changes();
    if (!registeredCache || changes !== registeredCache.changes) {
      registeredCache = { changes, entries: await deps.directory.subscriptions() };
    }
    return registeredCache.entries;
  };
  // The customers file's tenants that lifecycle events reached: read on every punctuation (not cached), so
  // an unsubscription stops the next hour's zero records whenever it lands.
  const fileStatuses = async (): Promise<Map<string, FileTenantStatus>> =>
    deps.directory ? await deps.directory.fileStatuses() : new Map();
  // Contracts from AWS entitlements, for contractOf (synchronous, per record): re-read before each
  // punctuation, and only when a write moved their version. A failed read fails the punctuation (the next
  // tick retries), so no hour closes on contracts that could not be read.
  let awsContracts = contractsFromEntitlements([]);
  let contractsVersion: string | null | undefined;
  const refreshContracts = async () => {
    if (!deps.entitlements) return;
    const version = await deps.entitlements.version();
    if (version === contractsVersion) return;
    awsContracts = contractsFromEntitlements(await deps.entitlements.all());
    contractsVersion = version;
  };
  const commitStage = new CommitStage({
    tasks: deps.tasks,
    // As many partitions as the processor works on at once.
    concurrency: config.groups.concurrency,
    logEnds: async () => {
      const offsets = await admin.fetchTopicOffsets(config.topics.usage);
      partitions = offsets.length;
      return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
    },
    usageTopic: config.topics.usage,
    producer: deps.producer,
    ledger: deps.ledger,
    submissionsTopic: config.topics.submissions,
    changelogTopic: config.topics.changelog,
    failedTopic: config.topics.failed,
    plan: config.plan,
    subscribers: async () => {
      const file = config.customers ?? {};
      const statuses = await fileStatuses();
      // Tenants count while their agreement stands (or is ending: its last hours are owed), file tenants too.
      const subscribers: Subscriber[] = Object.entries(file)
        .filter(([customer]) => isActive(statuses.get(customer)?.status ?? 'subscribed'))
        .map(([customer, m]) =>
          m.subscribedAt ? { customer, sinceMs: Date.parse(m.subscribedAt) } : { customer },
        );
      // A registered buyer counts per product: zero records go to that product's dimensions only, so an
      // unsubscription from one product stops that product's alone.
      for (const entry of await registered()) {
        if (file[entry.tenant] || !isActive(entry.status)) continue;
        subscribers.push({
          customer: entry.tenant,
          sinceMs: Date.parse(entry.subscribedAt),
          productCode: entry.productCode,
        });
      }
      return subscribers;
    },
    // The customers file's contract overrides what AWS returned for that tenant.
    contractOf: (customer) => config.customers?.[customer]?.contract ?? awsContracts.get(customer),
    // Registered and file tenants alike. A registered buyer is flushed per product: leaving product A
    // closes A's open hour early while B's keeps its schedule. A file tenant's status names no product: all
    // of its usage is flushed.
    flushes: async () => {
      const file = [...(await fileStatuses()).values()].filter((s) => config.customerMap.has(s.tenant));
      const out: { customer: string; productCode?: string; atMs: number }[] = [];
      for (const e of await registered()) {
        if (e.status === 'unsubscribe-pending' && e.unsubscribedAt !== undefined)
          out.push({ customer: e.tenant, productCode: e.productCode, atMs: Date.parse(e.unsubscribedAt) });
      }
      for (const e of file) {
        if (e.status === 'unsubscribe-pending' && e.unsubscribedAt !== undefined)
          out.push({ customer: e.tenant, atMs: Date.parse(e.unsubscribedAt) });
      }
      return out;
    },
    // The worker's rule: the customers file, or a registration of the dimension's product that did not
    // fail (a buyer registered for product A only is not mapped for B: B's usage waits for B's
    // registration). Container products bill the caller's own account: nothing to wait for.
    mapped: async () => {
      if (config.worker.api === 'MeterUsage') return () => true;
      const mappedSubscriptions = new Set(
        (await registered())
          .filter((e) => e.status !== 'subscribe-failed' && mappingOf(e) !== undefined)
          .map((e) => subscriptionField(e.tenant, e.productCode)),
      );
      return (customer, dimension) => {
        if (config.customerMap.has(customer)) return true;
        const productCode = config.plan.dimensions.get(dimension)?.productCode;
        return productCode !== undefined && mappedSubscriptions.has(subscriptionField(customer, productCode));
      };
    },
    api: config.worker.api,
    submitMarginMs: config.window.submitMarginMs,
    graceMs: config.window.graceMs,
    maxDelayMs: config.window.maxDelayMs,
    maxOutOfOrdernessMs: config.window.maxOutOfOrdernessMs,
    idleTimeoutMs: config.window.idleTimeoutMs,
    logger: deps.logger.child({ stage: 'commit' }),
    now: deps.now,
    ...(deps.faults ? { faults: deps.faults } : {}),
  });
  // The latest event time each partition's last committed batch added: the commit stage's wake rule reads
  // it once the batch is committed.
  const batchEventTimes = new Map<number, number>();
  const topology = new Topology()
    .addSource('usage-events', config.topics.usage)
    .addProcessor(
      'hourly-window',
      () =>
        new WindowProcessor({
          decoder: deps.decoder,
          ops,
          latePolicy: config.window.latePolicy,
          maxFutureSkewMs: config.window.maxFutureSkewMs,
          submitMarginMs: config.window.submitMarginMs,
          maxMessageBytes: config.maxMessageBytes,
          stats: deps.stats,
          logger: deps.logger.child({ stage: 'processor' }),
          partitions: () => partitions,
          api: config.worker.api,
        }),
    )
    .addStateStore(
      HOURLY_WINDOWS,
      () =>
        new HourlyWindowStore({
          windows: deps.windows,
          recovery,
          latePolicy: config.window.latePolicy,
          replayHorizonMs: DEFAULT_ACCEPTANCE_WINDOW_MS[config.worker.api],
          stats: deps.stats,
          logger: deps.logger.child({ stage: 'processor' }),
          now: deps.now,
          productOf: (dimension) => config.plan.dimensions.get(dimension)?.productCode,
          onBatchEventTime: (partition, ms) => batchEventTimes.set(partition, ms),
        }),
    )
    .addSink(FAILED_SINK, config.topics.failed)
    .addSink(REPARTITION_SINK, config.topics.usage)
    .schedule(
      'commit-stage',
      config.window.commitIntervalMs,
      async () => {
        await refreshContracts();
        return commitStage.punctuate();
      },
      (partition, checkpoint, nowMs) => {
        const eventTime = batchEventTimes.get(partition);
        batchEventTimes.delete(partition);
        return commitStage.closableAfterBatch(partition, eventTime, checkpoint, nowMs);
      },
    );
  return { topology, commitStage, refreshPartitions };
}

function kafkaRecoverySource(kafka: Kafka, admin: Admin, groupId: string, changelog: string): RecoverySource {
  return {
    async logEnd(task: TaskId) {
      const offsets = await admin.fetchTopicOffsets(task.topic);
      return BigInt(offsets.find((o) => o.partition === task.partition)?.high ?? '0');
    },
    async readChangelog(task: TaskId, fromHourMs: number) {
      return foldChangelog(task, await readPartition(kafka, changelog, task.partition), fromHourMs);
    },
    async committedOffset(task: TaskId) {
      const [topic] = await admin.fetchOffsets({ groupId, topics: [task.topic] });
      const p = topic?.partitions.find((x) => x.partition === task.partition);
      return p && Number(p.offset) >= 0 ? BigInt(p.offset) : undefined;
    },
    async offsetForTime(task: TaskId, timestampMs: number) {
      const offsets = await admin.fetchTopicOffsetsByTimestamp(task.topic, timestampMs);
      return offsets.find((o) => o.partition === task.partition)?.offset ?? '0';
    },
  };
}
