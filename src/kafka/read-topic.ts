/** Reads a whole topic, up to its end offsets at the time of the call (the DLQ tools and tests use it). */
import type { Kafka, KafkaMessage } from 'kafkajs';

export type PartitionMessage = KafkaMessage & { partition: number };

/** The end offset of each partition that holds messages, from the admin's `fetchTopicOffsets`. */
export function nonEmptyEnds(
  offsets: readonly { partition: number; high: string; low: string }[],
): Map<number, bigint> {
  return new Map(
    offsets.filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => [o.partition, BigInt(o.high)]),
  );
}

/**
 * The messages of `topic` below each listed partition's end offset, read from the beginning by a consumer
 * group of its own (`groupPrefix`-pid-time-random, so concurrent readers never share one). `onRead` hears
 * the running count after each batch. Nothing is read when `ends` is empty.
 */
export async function readUpTo(
  kafka: Kafka,
  topic: string,
  ends: ReadonlyMap<number, bigint>,
  o: { groupPrefix?: string; onRead?: (read: number) => void } = {},
): Promise<PartitionMessage[]> {
  const remaining = new Map(ends);
  const out: PartitionMessage[] = [];
  if (!remaining.size) return out;
  const consumer = kafka.consumer({
    groupId: `${o.groupPrefix ?? 'meterline-read'}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            const end = remaining.get(batch.partition);
            if (end === undefined) return;
            for (const message of batch.messages) {
              if (BigInt(message.offset) < end)
                out.push(Object.assign(message, { partition: batch.partition }));
            }
            o.onRead?.(out.length);
            // Compaction and transaction markers leave gaps: the batch's last offset says how far it read.
            if (BigInt(batch.lastOffset()) + 1n >= end) remaining.delete(batch.partition);
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

/** Every message on a topic, up to its end offsets at the time of the call. */
export async function readAllMessages(kafka: Kafka, topic: string): Promise<PartitionMessage[]> {
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return readUpTo(kafka, topic, nonEmptyEnds(offsets));
}

/**
 * Every message of one partition, up to its end offset at the time of the call (the window store reads
 * its changelog with it). Nothing is read when the partition is empty.
 */
export async function readPartition(kafka: Kafka, topic: string, partition: number): Promise<KafkaMessage[]> {
  const admin = kafka.admin();
  await admin.connect();
  let offsets: Awaited<ReturnType<typeof admin.fetchTopicOffsets>>;
  try {
    offsets = await admin.fetchTopicOffsets(topic);
  } finally {
    await admin.disconnect();
  }
  return readUpTo(kafka, topic, nonEmptyEnds(offsets.filter((o) => o.partition === partition)));
}
