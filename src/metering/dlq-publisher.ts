/** Publishes failed records. Callers await it before moving their checkpoint past the failed input. */
import type { Producer } from 'kafkajs';
import { dlqMessage, type FailedRecord } from './dlq-envelope.ts';

export class DlqPublisher {
  readonly producer: Producer;
  readonly topic: string;
  constructor(producer: Producer, topic: string) {
    this.producer = producer;
    this.topic = topic;
  }

  async publish(records: readonly FailedRecord[]): Promise<void> {
    if (!records.length) return;
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: records.map(dlqMessage),
    });
  }
}
