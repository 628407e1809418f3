/** Where a customer's events belong on the usage topic. */
import { Partitioners } from 'kafkajs';

/** The Kafka partition a customer's events go to: the Java-compatible murmur2 partitioner on its key. */
export function partitionOfCustomer(customer: string, partitions: number): number {
  return PARTITIONER({
    topic: 'usage',
    partitionMetadata: Array.from({ length: partitions }, (_, partitionId) => ({
      partitionId,
      leader: 0,
      replicas: [0],
      isr: [0],
      partitionErrorCode: 0,
    })),
    message: { key: customer, value: null },
  });
}
const PARTITIONER = Partitioners.DefaultPartitioner();
