/** Sends usage events to the usage topic, keyed by customer so a customer's events stay on one partition. */
import type { Kafka, Message } from 'kafkajs';
import { idempotentProducer } from '../kafka/client.ts';
import { ATTR } from '../observability/trace-attributes.ts';
import {
  failSpan,
  injectHeaders,
  type Span,
  SpanKind,
  tracer,
  tracingActive,
} from '../observability/tracing.ts';

export interface ProduceOptions {
  kafka: Kafka;
  topic: string;
  batchSize?: number;
  onProgress?: (sent: number) => void;
}

/** A message to produce; `partition` overrides the key's partition (tests use it to misroute events). */
export type Outgoing = {
  key: string | null;
  value: Buffer | string | null;
  partition?: number;
  headers?: Record<string, string>;
  /** The usage event's id, for the producer span. */
  eventId?: string;
};

/**
 * Produces the messages in batches. With tracing on, each message gets a producer span whose context
 * travels in its `traceparent` header: the first link of the chain that ends at the AWS call.
 */
export async function produceMessages(messages: Iterable<Outgoing>, o: ProduceOptions): Promise<number> {
  const producer = idempotentProducer(o.kafka);
  await producer.connect();
  const traced = tracingActive();
  let sent = 0;
  try {
    let batch: Message[] = [];
    let spans: Span[] = [];
    const flush = async () => {
      if (!batch.length) return;
      try {
        await producer.send({ topic: o.topic, acks: -1, messages: batch });
      } catch (error) {
        for (const span of spans) failSpan(span, error);
        throw error;
      } finally {
        for (const span of spans) span.end();
      }
      sent += batch.length;
      batch = [];
      spans = [];
      o.onProgress?.(sent);
    };
    for (const m of messages) {
      const message: Message = { key: m.key, value: m.value };
      if (m.partition !== undefined) message.partition = m.partition;
      if (m.headers) message.headers = { ...m.headers };
      if (traced) {
        const span = producerSpan(o.topic, m);
        spans.push(span);
        message.headers = injectHeaders(span, (message.headers ?? {}) as Record<string, string>);
      }
      batch.push(message);
      if (batch.length >= (o.batchSize ?? 1000)) await flush();
    }
    await flush();
  } finally {
    await producer.disconnect();
  }
  return sent;
}

function producerSpan(topic: string, m: Outgoing): Span {
  return tracer().startSpan(`send ${topic}`, {
    kind: SpanKind.PRODUCER,
    attributes: {
      [ATTR.messagingSystem]: 'kafka',
      [ATTR.messagingOperationType]: 'send',
      [ATTR.messagingOperationName]: 'send',
      [ATTR.messagingDestination]: topic,
      ...(m.key !== null ? { [ATTR.messagingKafkaKey]: m.key, [ATTR.customer]: m.key } : {}),
      ...(m.eventId ? { [ATTR.eventId]: m.eventId } : {}),
    },
  });
}

export function eventMessage(event: { customer?: unknown; id?: unknown }): Outgoing {
  return {
    key: typeof event.customer === 'string' ? event.customer : null,
    value: JSON.stringify(event),
    ...(typeof event.id === 'string' ? { eventId: event.id } : {}),
  };
}
