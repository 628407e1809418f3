/** Sends usage events to the usage topic, keyed by customer so a customer's events stay on one partition. */
import type { Kafka, Message } from 'kafkajs';
import { idempotentProducer } from '../kafka/client.ts';

export interface ProduceOptions {
  kafka: Kafka;
  topic: string;
  batchSize?: number;
  onProgress?: (sent: number) => void;
}

/** A message to produce; `partition` overrides the key's partition (tests use it to misroute events). */
export type Outgoing = { key: string | null; value: Buffer | string | null; partition?: number };

export async function produceMessages(messages: Iterable<Outgoing>, o: ProduceOptions): Promise<number> {
  const producer = idempotentProducer(o.kafka);
  await producer.connect();
  let sent = 0;
  try {
    let batch: Message[] = [];
    const flush = async () => {
      if (!batch.length) return;
      await producer.send({ topic: o.topic, acks: -1, messages: batch });
      sent += batch.length;
      batch = [];
      o.onProgress?.(sent);
    };
    for (const m of messages) {
      batch.push(m.partition === undefined ? { key: m.key, value: m.value } : m);
      if (batch.length >= (o.batchSize ?? 1000)) await flush();
    }
    await flush();
  } finally {
    await producer.disconnect();
  }
  return sent;
}

export function eventMessage(event: { customer?: unknown }): Outgoing {
  return { key: typeof event.customer === 'string' ? event.customer : null, value: JSON.stringify(event) };
}
