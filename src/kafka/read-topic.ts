/** Reads a whole topic, up to its end offsets at the time of the call (the DLQ tools and tests use it). */
import type { Kafka, KafkaMessage } from 'kafkajs';

/** Every message on a topic, up to its end offsets at the time of the call. */
export async function readAllMessages(
  kafka: Kafka,
  topic: string,
): Promise<(KafkaMessage & { partition: number })[]> {
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(
    offsets.filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => [o.partition, BigInt(o.high)]),
  );
  const out: (KafkaMessage & { partition: number })[] = [];
  if (!remaining.size) return out;
  const consumer = kafka.consumer({
    groupId: `meterline-read-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            const end = remaining.get(partition);
            if (end === undefined) return;
            out.push(Object.assign(message, { partition }));
            if (BigInt(message.offset) + 1n >= end) remaining.delete(partition);
            if (!remaining.size) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/**
 * Every message of one partition, up to its end offset at the time of the call (the window store reads
 * its changelog with it). Nothing is read when the partition is empty.
 */
export async function readPartition(kafka: Kafka, topic: string, partition: number): Promise<KafkaMessage[]> {
  const admin = kafka.admin();
  await admin.connect();
  let end: bigint;
  let start: bigint;
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    const o = offsets.find((x) => x.partition === partition);
    end = BigInt(o?.high ?? '0');
    start = BigInt(o?.low ?? '0');
  } finally {
    await admin.disconnect();
  }
  const out: KafkaMessage[] = [];
  if (end <= start) return out;
  const consumer = kafka.consumer({
    groupId: `meterline-read-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            if (batch.partition !== partition) return;
            for (const message of batch.messages) {
              if (BigInt(message.offset) >= end) continue;
              out.push(message);
            }
            // Compaction and transaction markers leave gaps: the batch's last offset says how far it read.
            if (BigInt(batch.lastOffset()) + 1n >= end) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}
