/**
 * The failed-records topic as an operator sees it: every entry with an id (`partition:offset`), a filter,
 * and a redrive that sends entries back where they failed. A redrive refuses what AWS would refuse
 * anyway (an hour past its deadline) and says why; each entry is redriven at most once.
 */
import type { Kafka, Producer } from 'kafkajs';
import { idempotentProducer } from '../kafka/client.ts';
import { readAllMessages } from '../kafka/read-topic.ts';
import { acceptanceDeadline, type MeteringApi } from '../metering/aws-window.ts';
import type { FailedRecord } from '../metering/dlq-envelope.ts';
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import { RedriveMarks } from '../state/redrive-marks.ts';
import { hourStart } from '../time/hours.ts';
import { parseEventTimestamp } from '../time/timestamp.ts';

export interface DlqEntry {
  /** `partition:offset` on the failed-records topic. */
  id: string;
  envelope: FailedRecord;
}

/** Marks a message sent back by a redrive, with the DLQ entry it came from. */
export const REDRIVE_HEADER = 'meterline-redrive-of';
/** A redriven record must reach AWS this long before its deadline to be worth sending. */
export const REDRIVE_MARGIN_MS = 5 * 60_000;

export async function readDlq(kafka: Kafka, topic: string): Promise<DlqEntry[]> {
  const out: DlqEntry[] = [];
  for (const m of await readAllMessages(kafka, topic)) {
    try {
      out.push({ id: `${m.partition}:${m.offset}`, envelope: JSON.parse(String(m.value)) as FailedRecord });
    } catch {
      // Not ours: the failed-records topic only holds envelopes, but a stray message must not stop a listing.
    }
  }
  return out;
}

/**
 * The entries (none while the topic does not exist) and which of them were redriven: what `dlq list` and
 * the console show.
 */
export async function readDlqWithMarks(
  kafka: Kafka,
  redis: ScriptedRedis,
  keys: Keys,
  topic: string,
): Promise<{ entries: DlqEntry[]; redriven: (e: DlqEntry) => boolean }> {
  const admin = kafka.admin();
  await admin.connect();
  const exists = await admin.listTopics().finally(() => admin.disconnect());
  const entries = exists.includes(topic) ? await readDlq(kafka, topic) : [];
  const done = await new RedriveMarks(redis, keys, topic).among(entries.map((e) => e.id));
  return { entries, redriven: (e) => done.has(e.id) };
}

/** `key=value` filters on stage, reason, customer, dimension or hour; all must match. */
export function matches(entry: DlqEntry, filters: readonly string[]): boolean {
  const e = entry.envelope;
  // A Map: the key is the operator's text, and `constructor=…` must match nothing.
  const fields = new Map<string, string | undefined>([
    ['stage', e.stage],
    ['reason', e.reason],
    ['customer', e.record?.customer],
    ['dimension', e.record?.dimension],
    ['hour', e.record?.hour],
  ]);
  return filters.every((f) => {
    const [key, ...rest] = f.split('=');
    return key !== undefined && fields.get(key) === rest.join('=');
  });
}

export const FILTER_KEYS = ['stage', 'reason', 'customer', 'dimension', 'hour'];

export type RedriveOutcome =
  | { kind: 'redriven' | 'would-redrive'; to: string }
  | { kind: 'refused'; why: string }
  | { kind: 'already-redriven' };

export interface RedriveOptions {
  kafka: Kafka;
  producer: Producer;
  redis: ScriptedRedis;
  keys: Keys;
  dlqTopic: string;
  topics: { usage: string; submissions: string };
  api: MeteringApi;
  /** A record must reach AWS this long before its deadline to be worth sending. */
  marginMs: number;
  dryRun: boolean;
  now?: () => number;
}

/**
 * Redrives one entry: ingest failures go back to the usage topic; submit failures, and frozen records the
 * commit stage could not emit, to the submission topic.
 */
export async function redrive(entry: DlqEntry, o: RedriveOptions): Promise<RedriveOutcome> {
  const now = (o.now ?? Date.now)();
  const e = entry.envelope;
  const marks = new RedriveMarks(o.redis, o.keys, o.dlqTopic);
  if (await marks.has(entry.id)) return { kind: 'already-redriven' };

  let message: { topic: string; key: string | null; value: string | Buffer; headers: Record<string, string> };
  if ((e.stage === 'submit' || e.stage === 'commit') && e.record) {
    const deadline = Date.parse(e.record.deadline);
    if (now > deadline - o.marginMs) {
      return {
        kind: 'refused',
        why: `past its deadline ${e.record.deadline}: AWS no longer accepts the hour ${e.record.hour}`,
      };
    }
    message = {
      topic: o.topics.submissions,
      key: e.record.customer,
      value: JSON.stringify(e.record),
      headers: { [REDRIVE_HEADER]: entry.id },
    };
  } else if (e.stage === 'ingest') {
    if (!e.originalBase64)
      return { kind: 'refused', why: 'the original message had no value: nothing to send' };
    const value = Buffer.from(e.originalBase64, 'base64');
    const hour = eventHour(value);
    if (hour !== undefined && now > acceptanceDeadline(o.api, hour) - o.marginMs) {
      return {
        kind: 'refused',
        why: `the event's hour ${new Date(hour).toISOString()} is past its AWS deadline`,
      };
    }
    message = {
      topic: e.source?.topic ?? o.topics.usage,
      key: e.source?.key ?? null,
      value,
      headers: { ...(e.source?.headers ?? {}), [REDRIVE_HEADER]: entry.id },
    };
  } else {
    return { kind: 'refused', why: 'the entry holds neither a record nor an original message' };
  }

  if (o.dryRun) return { kind: 'would-redrive', to: message.topic };
  await o.producer.send({
    topic: message.topic,
    acks: -1,
    messages: [{ key: message.key, value: message.value, headers: message.headers }],
  });
  await marks.mark(entry.id, now);
  return { kind: 'redriven', to: message.topic };
}

/**
 * Redrives the entries one by one with one producer (`dlq redrive` and the console's redrive); `onEach`
 * follows the progress.
 */
export async function redriveMany(
  entries: readonly DlqEntry[],
  o: Omit<RedriveOptions, 'producer'>,
  onEach?: () => void,
): Promise<[DlqEntry, RedriveOutcome][]> {
  const producer = idempotentProducer(o.kafka);
  await producer.connect();
  const results: [DlqEntry, RedriveOutcome][] = [];
  try {
    for (const entry of entries) {
      results.push([entry, await redrive(entry, { ...o, producer })]);
      onEach?.();
    }
  } finally {
    await producer.disconnect();
  }
  return results;
}

/** The UTC hour of a JSON event's timestamp, when it can be read. */
function eventHour(value: Buffer): number | undefined {
  try {
    const ts = parseEventTimestamp((JSON.parse(value.toString('utf8')) as { timestamp?: unknown }).timestamp);
    return ts.ok ? hourStart(ts.ms) : undefined;
  } catch {
    return undefined;
  }
}
