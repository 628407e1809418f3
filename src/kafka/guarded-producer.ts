/**
 * Producers that fail loudly. A kafkajs producer told to retry without end (an idempotent producer's
 * default) never returns from `send` when its topic is deleted or denied by an ACL: the stage hangs while
 * the process looks healthy. Here every send has bounded retries and a deadline. A send that fails throws
 * a retriable `kafka_error`, so the stage keeps its input and tries it again; the failure is counted and
 * makes the process not ready at once, and not alive once it has lasted (`ProduceHealth`). The first
 * send that succeeds again clears it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kafka, Producer, ProducerBatch, ProducerRecord, RecordMetadata } from 'kafkajs';
import { MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { metrics } from '../observability/metrics.ts';

/** kafkajs's own retries of one send: about 4 s in all, then the send fails. */
export const BOUNDED_RETRY = { retries: 4, initialRetryTime: 300, maxRetryTime: 2_000 } as const;
/** Sends to a topic that keeps failing are spaced out (from 1 s, doubling, up to this), never a busy loop. */
const MAX_SPACING_MS = 5_000;

interface Failing {
  producer: string;
  topic: string;
  sinceMs: number;
  failures: number;
  error: string;
}

/** Which producers fail now, for /readyz and /healthz. A send that succeeds clears its producer and topic. */
export class ProduceHealth {
  readonly #failing = new Map<string, Failing>();
  readonly #unhealthyAfterMs: number;
  readonly #now: () => number;

  /** `unhealthyAfterMs`: how long sends may keep failing before the process asks to be restarted. */
  constructor(unhealthyAfterMs: number, now: () => number = Date.now) {
    this.#unhealthyAfterMs = unhealthyAfterMs;
    this.#now = now;
  }

  failed(producer: string, topic: string, error: unknown): void {
    const key = `${producer}\u0000${topic}`;
    const entry = this.#failing.get(key);
    const message = error instanceof Error ? error.message : String(error);
    if (entry) {
      entry.failures += 1;
      entry.error = message;
    } else {
      this.#failing.set(key, { producer, topic, sinceMs: this.#now(), failures: 1, error: message });
    }
    metrics.produceFailures.inc({ producer, topic });
    metrics.producerFailing.set({ producer, topic }, 1);
  }

  /** Returns how many sends had failed in a row before this one (0: none). */
  succeeded(producer: string, topic: string): number {
    const key = `${producer}\u0000${topic}`;
    const entry = this.#failing.get(key);
    this.#failing.delete(key);
    metrics.producerFailing.set({ producer, topic }, 0);
    return entry?.failures ?? 0;
  }

  /** Why this process should take no traffic now: every producer whose last send failed. */
  notReady(): string[] {
    return [...this.#failing.values()].map((f) => this.#describe(f));
  }

  /** Why this process should be restarted: producers failing without a success for too long. */
  notLive(): string[] {
    const now = this.#now();
    return [...this.#failing.values()]
      .filter((f) => now - f.sinceMs >= this.#unhealthyAfterMs)
      .map((f) => this.#describe(f));
  }

  #describe(f: Failing): string {
    const since = new Date(f.sinceMs).toISOString();
    return `producer ${f.producer} cannot send to ${f.topic} since ${since} (${f.failures} failed sends): ${f.error}`;
  }
}

export interface GuardedProducerOptions {
  kafka: Kafka;
  /** Names the producer in metrics, logs and health reasons: the stage it serves. */
  name: string;
  /** Kafka's idempotent producer: no duplicates and no reordering from its own retries. */
  idempotent: boolean;
  /** Deadline of one send, retries and spacing included. */
  timeoutMs: number;
  health: ProduceHealth;
  logger: Logger;
}

type Listener = Parameters<Producer['on']>;

/** One underlying kafkajs producer; it is disconnected once retired and no send runs on it any more. */
interface Connection {
  producer: Producer;
  connected: Promise<void>;
  inFlight: number;
  retired: boolean;
}

/**
 * A kafkajs `Producer` with bounded sends. After a failed send the underlying producer is replaced: an
 * idempotent one that gave up must not reuse sequence numbers (a request that timed out may still have
 * been written, and the broker would take the next batch for its duplicate); a new one gets a new
 * producer id. A new one also forgets the failing topic's metadata, which kafkajs would otherwise refresh
 * (and fail on) for every other topic it sends to. Transactions are not supported.
 */
export class GuardedProducer implements Producer {
  readonly #o: GuardedProducerOptions;
  #current: Connection | undefined;
  readonly #listeners = new Set<Listener>();
  /** Per topic: consecutive failures and when the last attempt started (to space attempts out). */
  readonly #spacing = new Map<string, { failures: number; lastStartMs: number }>();
  #closed = false;

  constructor(options: GuardedProducerOptions) {
    this.#o = options;
  }

  get events(): Producer['events'] {
    return this.#connection().producer.events;
  }

  /** Connects now (at start-up), so a broker that cannot be reached stops the start. */
  async connect(): Promise<void> {
    this.#closed = false;
    const current = this.#connection();
    try {
      await current.connected;
    } catch (error) {
      this.#retire(current);
      throw error;
    }
  }

  async disconnect(): Promise<void> {
    this.#closed = true;
    const current = this.#current;
    this.#current = undefined;
    if (current) {
      current.retired = true;
      await current.producer.disconnect();
    }
  }

  isIdempotent(): boolean {
    return this.#o.idempotent;
  }

  /** Listeners are kept, and attached again to each new underlying producer. */
  on: Producer['on'] = ((...args: Listener) => {
    this.#listeners.add(args);
    const remove = this.#connection().producer.on(...args);
    return () => {
      this.#listeners.delete(args);
      remove();
    };
  }) as Producer['on'];

  transaction(): never {
    throw new Error(`producer ${this.#o.name}: transactions are not supported`);
  }

  logger(): ReturnType<Producer['logger']> {
    return this.#connection().producer.logger();
  }

  send(record: ProducerRecord): Promise<RecordMetadata[]> {
    return this.#guarded([record.topic], (producer, timeout) =>
      producer.send({ ...record, timeout: Math.min(record.timeout ?? timeout, timeout) }),
    );
  }

  sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]> {
    const topics = [...new Set((batch.topicMessages ?? []).map((t) => t.topic))];
    return this.#guarded(topics, (producer, timeout) =>
      producer.sendBatch({ ...batch, timeout: Math.min(batch.timeout ?? timeout, timeout) }),
    );
  }

  async #guarded(
    topics: string[],
    send: (producer: Producer, timeoutMs: number) => Promise<RecordMetadata[]>,
  ): Promise<RecordMetadata[]> {
    const { name, timeoutMs, health, logger } = this.#o;
    if (this.#closed) {
      throw new MeterlineError('kafka_error', `producer ${name} is closed`, { retriable: true });
    }
    const deadline = Date.now() + timeoutMs;
    const key = topics.join(',');
    const spacing = this.#spacing.get(key);
    if (spacing) {
      const gap = Math.min(1_000 * 2 ** Math.min(spacing.failures - 1, 10), MAX_SPACING_MS, timeoutMs / 2);
      const wait = spacing.lastStartMs + gap - Date.now();
      if (wait > 0) await sleep(wait);
    }
    const startedMs = Date.now();
    const conn = this.#connection();
    conn.inFlight += 1;
    const attempt = (async () => {
      await conn.connected;
      return send(conn.producer, Math.max(1, deadline - Date.now()));
    })();
    // Counted until it settles, even when abandoned at the deadline (kafkajs's retries are bounded).
    attempt
      .catch(() => undefined)
      .finally(() => {
        conn.inFlight -= 1;
        this.#disconnectIfIdle(conn);
      });
    let timer: NodeJS.Timeout | undefined;
    try {
      const out = await Promise.race([
        attempt,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${timeoutMs} ms`)),
            Math.max(0, deadline - Date.now()),
          );
        }),
      ]);
      this.#spacing.delete(key);
      for (const topic of topics) {
        const failures = health.succeeded(name, topic);
        if (failures) logger.warn({ producer: name, topic, failures }, 'sends succeed again');
      }
      return out;
    } catch (cause) {
      this.#retire(conn);
      this.#spacing.set(key, { failures: (spacing?.failures ?? 0) + 1, lastStartMs: startedMs });
      for (const topic of topics) health.failed(name, topic, cause);
      const error = new MeterlineError(
        'kafka_error',
        `producer ${name} could not send to ${key}: ${cause instanceof Error ? cause.message : String(cause)}`,
        { retriable: true, cause, context: { producer: name, topics } },
      );
      logger.error(
        { producer: name, topics, err: error },
        'send failed; the stage keeps its input and retries',
      );
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The underlying producer, created (and connecting) on first use and after a failed send. */
  #connection(): Connection {
    if (this.#current) return this.#current;
    const producer = this.#o.kafka.producer({
      idempotent: this.#o.idempotent,
      ...(this.#o.idempotent ? { maxInFlightRequests: 1 } : {}),
      retry: { ...BOUNDED_RETRY },
    });
    for (const args of this.#listeners) producer.on(...args);
    const connected = producer.connect();
    connected.catch(() => undefined);
    this.#current = { producer, connected, inFlight: 0, retired: false };
    return this.#current;
  }

  /** Sends from now on go to a new producer; this one goes once the sends running on it have settled. */
  #retire(conn: Connection): void {
    if (this.#current === conn) this.#current = undefined;
    conn.retired = true;
    this.#disconnectIfIdle(conn);
  }

  // Not while a send runs on it: kafkajs's retry loop would connect it again, and nobody would close it.
  #disconnectIfIdle(conn: Connection): void {
    if (conn.retired && conn.inFlight === 0) conn.producer.disconnect().catch(() => undefined);
  }
}
