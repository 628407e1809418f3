/** How far each partition of the usage topic got, in event time and in offsets, as the window store keeps it. */
import type { ScriptedRedis } from '../redis/client.ts';
import type { Keys } from '../redis/keys.ts';
import type { PartitionTime } from './window-types.ts';

/** Event time and checkpoint of every partition of a topic (one call each: they live in different slots). */
export async function readPartitionTimes(
  redis: ScriptedRedis,
  keys: Keys,
  topic: string,
  partitions: number,
): Promise<PartitionTime[]> {
  return Promise.all(
    Array.from({ length: partitions }, async (_, partition) => {
      const k = keys.partition({ topic, partition });
      const res = await redis.multi().hmget(k.time(), 'maxEventTime', 'activeAt').get(k.checkpoint()).exec();
      const [max, active] = (res?.[0]?.[1] as (string | null)[] | undefined) ?? [null, null];
      const checkpoint = (res?.[1]?.[1] as string | null | undefined) ?? null;
      return {
        partition,
        maxEventTime: max == null ? undefined : Number(max),
        activeAt: active == null ? undefined : Number(active),
        checkpoint: checkpoint === null ? undefined : BigInt(checkpoint),
      };
    }),
  );
}
