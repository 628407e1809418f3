/** Publishes failed records. Callers await it before moving their checkpoint past the failed input. */
import type { Producer } from 'kafkajs';
import { DLQ_HEADER_REASON, DLQ_HEADER_STAGE, type FailedRecord } from './envelope.ts';

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
      messages: records.map((r) => ({
        key: r.record?.recordId ?? r.source?.key ?? null,
        value: JSON.stringify(r),
        headers: { [DLQ_HEADER_STAGE]: r.stage, [DLQ_HEADER_REASON]: r.reason },
      })),
    });
  }
}
