/**
 * The console's audit log: one message per redrive asked for and one with its outcome, naming who. A Kafka
 * topic rather than a Redis stream: the pipeline treats Redis as a cache it can lose and rebuild (the
 * window changelog, the replay), and an audit log must outlive that; the topic is replicated, keeps a year,
 * and the operator's own Kafka tooling can read it. The console creates it when missing.
 */
import type { Kafka, Producer } from 'kafkajs';
import { readAllMessages } from '../kafka/read-topic.ts';
import { ensureTopics } from '../kafka/topics.ts';

const YEAR_MS = String(366 * 24 * 3_600_000);

export interface AuditEntry {
  at: string;
  /** The signed-in user's name, or the identity the proxy gave. */
  who: string;
  role: string;
  action: 'redrive';
  /** requested: written before anything is sent (no record, no redrive); done: with each outcome. */
  phase: 'requested' | 'done';
  /** DLQ entry ids (partition:offset). */
  entries: string[];
  outcomes?: { id: string; kind: string; detail?: string }[];
}

export class AuditLog {
  readonly topic: string;
  readonly #kafka: Kafka;
  #producer: Producer | undefined;

  constructor(kafka: Kafka, topic: string) {
    this.#kafka = kafka;
    this.topic = topic;
  }

  async start(): Promise<void> {
    await ensureTopics(this.#kafka, [
      { topic: this.topic, numPartitions: 1, configEntries: [{ name: 'retention.ms', value: YEAR_MS }] },
    ]);
    // Bounded retries: an operator waits for the answer, and a redrive is refused if its audit fails.
    this.#producer = this.#kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      retry: { retries: 5 },
    });
    await this.#producer.connect();
  }

  async write(entry: AuditEntry): Promise<void> {
    if (!this.#producer) throw new Error('the audit log is not started');
    await this.#producer.send({
      topic: this.topic,
      acks: -1,
      messages: [{ key: entry.who, value: JSON.stringify(entry) }],
    });
  }

  /** Every entry, newest first. */
  async read(): Promise<AuditEntry[]> {
    const messages = await readAllMessages(this.#kafka, this.topic);
    return messages
      .flatMap((m) => {
        try {
          return [JSON.parse(String(m.value)) as AuditEntry];
        } catch {
          return [];
        }
      })
      .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  }

  async stop(): Promise<void> {
    await this.#producer?.disconnect();
  }
}
