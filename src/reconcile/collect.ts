/**
 * Reads what `reconcile internal` and `reconcile gaps` account with: the window changelog (frozen hours,
 * their model state, emitted marks), the open windows and late-event audit in Redis, the submission
 * topic with the worker group's committed offsets, the ledger, the failed-records topic with its redrive
 * marks, and (on request) the usage topic itself. Read-only: nothing here writes to Kafka or Redis.
 */
import type { Admin, Kafka } from 'kafkajs';
import { decodeState } from '../commit/metering-models.ts';
import type { Config } from '../config/config.ts';
import { readDlq } from '../dlq/redrive.ts';
import { EventDecoder } from '../ingest/decoder.ts';
import { partitionOfCustomer } from '../kafka/partitioner.ts';
import { nonEmptyEnds, type PartitionMessage, readUpTo } from '../kafka/read-topic.ts';
import { parseSubmissionRecord } from '../metering/submission-record.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import { FIELD_SEPARATOR, type Keys, splitAggregateField } from '../redis/keys.ts';
import { Ledger } from '../state/ledger.ts';
import { RedriveMarks } from '../state/redrive-marks.ts';
import { foldChangelog } from '../state/window-changelog.ts';
import { REPLAY_MARK_TTL_S, WindowReads } from '../state/window-reads.ts';
import { hourStart } from '../time/hours.ts';
import { parseEventTimestamp } from '../time/timestamp.ts';
import type {
  DlqSeen,
  FrozenHourInfo,
  InternalInputs,
  LateSeen,
  SubmissionSeen,
  UsageSeen,
} from './internal-inputs.ts';

/** The TTL the window store gives a partition's replay marks (window-store.ts setReplayUntil/Hold). */
const REPLAY_MARK_TTL_MS = REPLAY_MARK_TTL_S * 1000;

/** Called while topics are read: messages read so far, and in all (for a bar with an ETA). */
export type Progress = (stage: string, done: number, total: number) => void;

export interface CollectOptions {
  config: Config;
  kafka: Kafka;
  redis: ScriptedRedis;
  keys: Keys;
  fromMs: number;
  toMs: number;
  nowMs: number;
  /** Re-read the usage topic to measure every hour from the events themselves. */
  measure: boolean;
  progress?: Progress;
}

export async function collectInternal(o: CollectOptions): Promise<InternalInputs> {
  const { config, kafka, redis, keys } = o;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const partitions = existing.has(config.topics.usage)
      ? await partitionCount(admin, config.topics.usage)
      : config.topics.partitions;
    const usageParts = Array.from({ length: partitions }, (_, p) => ({
      topic: config.topics.usage,
      partition: p,
    }));

    const frozen: FrozenHourInfo[] = [];
    if (existing.has(config.topics.changelog)) {
      const messages = await readTopicWithProgress(
        kafka,
        admin,
        config.topics.changelog,
        'changelog',
        o.progress,
      );
      for (const part of usageParts) {
        const snapshot = foldChangelog(part, messages, 0);
        for (const h of snapshot.hours) {
          frozen.push({
            partition: part.partition,
            hourMs: h.hourMs,
            emitted: h.emitted,
            records: new Map(
              h.records.map(([field, text]) => [
                field,
                /^\d+$/.test(text) ? Number(text) : (JSON.parse(text) as { quantity: number }).quantity,
              ]),
            ),
            states: new Map(h.states.map(([field, encoded]) => [field, decodeState(encoded)])),
          });
        }
      }
    }

    // A recovery after a state loss marks each partition's replay for 7 days: when it was set, Redis (and
    // the ledger in it) had lost its state.
    let redisLossAtMs: number | undefined;
    const windows = new WindowReads(redis, keys);
    for (const part of usageParts) {
      for (const ttl of await windows.replayMarkTtlsMs(part)) {
        const at = o.nowMs - (REPLAY_MARK_TTL_MS - ttl);
        if (redisLossAtMs === undefined || at > redisLossAtMs) redisLossAtMs = at;
      }
    }

    const open: InternalInputs['open'] = [];
    const late: LateSeen[] = [];
    for (const part of usageParts) {
      for (const { hourMs, field, micros } of await windows.openAggregates(part, o.fromMs, o.toMs)) {
        const key = splitAggregateField(field);
        if (key) open.push({ customer: key.customer, dimension: key.dimension, hourMs, micros });
      }
      for (const entry of await windows.lateAudit(part)) {
        // eventId|field|fromHour|toHour; the id itself may hold '|'.
        const parts = entry.split('|');
        if (parts.length < 4) continue;
        const toHourMs = Number(parts.pop());
        const fromHourMs = Number(parts.pop());
        const field = parts.pop() as string;
        const key = splitAggregateField(field);
        if (!key) continue;
        late.push({
          eventId: parts.join('|'),
          customer: key.customer,
          dimension: key.dimension,
          fromHourMs,
          toHourMs,
        });
      }
    }

    const submissions: SubmissionSeen[] = [];
    const workerCommitted = new Map<number, bigint>();
    if (existing.has(config.topics.submissions)) {
      for (const m of await readTopicWithProgress(
        kafka,
        admin,
        config.topics.submissions,
        'submissions',
        o.progress,
      )) {
        const r = parseSubmissionRecord(m.value);
        if (!r) continue;
        submissions.push({
          recordId: r.recordId,
          customer: r.customer,
          dimension: r.dimension,
          hourMs: Date.parse(r.hour),
          quantity: r.quantity,
          deadlineMs: Date.parse(r.deadline),
          partition: m.partition,
          offset: BigInt(m.offset),
          timestampMs: Number(m.timestamp),
        });
      }
      const committed = await admin.fetchOffsets({
        groupId: config.groups.worker,
        topics: [config.topics.submissions],
      });
      for (const t of committed)
        for (const p of t.partitions)
          if (Number(p.offset) >= 0) workerCommitted.set(p.partition, BigInt(p.offset));
    }

    const dlq: DlqSeen[] = [];
    if (existing.has(config.topics.failed)) {
      const entries = await readDlq(kafka, config.topics.failed);
      const redriven = await new RedriveMarks(redis, keys, config.topics.failed).among(
        entries.map((e) => e.id),
      );
      entries.forEach((e) => {
        const env = e.envelope;
        const seen: DlqSeen = {
          id: e.id,
          stage: env.stage,
          reason: env.reason,
          redriven: redriven.has(e.id),
        };
        if (env.record) {
          seen.record = {
            recordId: env.record.recordId,
            customer: env.record.customer,
            dimension: env.record.dimension,
            hourMs: Date.parse(env.record.hour),
            quantity: env.record.quantity,
          };
        } else if (env.stage === 'ingest') {
          if (env.source)
            seen.source = {
              topic: env.source.topic,
              partition: env.source.partition,
              offset: env.source.offset,
            };
          const event = readableEvent(env.originalBase64);
          if (event) seen.event = event;
        }
        dlq.push(seen);
      });
    }

    const ledger = await new Ledger(redis, keys).all();

    let usage: UsageSeen[] | undefined;
    if (o.measure && existing.has(config.topics.usage)) {
      usage = [];
      const decoder = new EventDecoder();
      const ctx = {
        // Measured as of each message's write: the clock guards then are the ones that held.
        nowMs: o.nowMs,
        maxFutureSkewMs: Number.MAX_SAFE_INTEGER,
        submitMarginMs: 0,
        dimensions: new Set(config.plan.dimensions.keys()),
        maxMessageBytes: config.maxMessageBytes,
        api: config.worker.api,
      };
      for (const m of await readTopicWithProgress(kafka, admin, config.topics.usage, 'usage', o.progress)) {
        const res = await decoder.decode(m.value, { ...ctx, nowMs: Number(m.timestamp) });
        if (!res.ok) continue;
        const e = res.event;
        usage.push({
          id: e.id,
          customer: e.customer,
          dimension: e.dimension,
          hourMs: hourStart(e.timestampMs),
          micros: BigInt(e.micros),
          partition: m.partition,
          offset: m.offset,
        });
      }
    }

    return {
      plan: config.plan,
      api: config.worker.api,
      fromMs: o.fromMs,
      toMs: o.toMs,
      nowMs: o.nowMs,
      frozen,
      open,
      submissions,
      workerCommitted,
      ledger,
      dlq,
      late,
      ...(usage ? { usage } : {}),
      partitionOf: (customer) => partitionOfCustomer(customer, partitions),
      ...(redisLossAtMs === undefined ? {} : { redisLossAtMs }),
    };
  } finally {
    await admin.disconnect();
  }
}

async function partitionCount(admin: Admin, topic: string): Promise<number> {
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  return meta.topics[0]?.partitions.length ?? 0;
}

/** A dead-lettered input that is still a readable event (a too_old one, say), for its row. */
function readableEvent(base64: string | null | undefined): DlqSeen['event'] | undefined {
  if (!base64) return undefined;
  try {
    const raw = JSON.parse(Buffer.from(base64, 'base64').toString('utf8')) as Record<string, unknown>;
    const ts = parseEventTimestamp(raw.timestamp);
    if (
      !ts.ok ||
      typeof raw.id !== 'string' ||
      typeof raw.customer !== 'string' ||
      typeof raw.dimension !== 'string' ||
      typeof raw.quantity !== 'number' ||
      !Number.isFinite(raw.quantity) ||
      raw.quantity < 0
    )
      return undefined;
    return {
      id: raw.id,
      customer: raw.customer,
      dimension: raw.dimension,
      hourMs: hourStart(ts.ms),
      micros: BigInt(Math.round(raw.quantity * 1_000_000)),
    };
  } catch {
    return undefined;
  }
}

/**
 * Every message of a topic up to its end offsets at the call, reporting progress (messages read of the
 * total between the low and high watermarks) as it goes.
 */
export async function readTopicWithProgress(
  kafka: Kafka,
  admin: Admin,
  topic: string,
  stage: string,
  progress?: Progress,
): Promise<PartitionMessage[]> {
  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((s, o) => s + Number(BigInt(o.high) - BigInt(o.low)), 0);
  progress?.(stage, 0, total);
  return readUpTo(kafka, topic, nonEmptyEnds(offsets), {
    groupPrefix: 'meterline-reconcile',
    ...(progress ? { onRead: (read: number) => progress(stage, read, total) } : {}),
  });
}

export { FIELD_SEPARATOR };
