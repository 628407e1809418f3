/**
 * The crash scenario on a 3-master Redis Cluster: the sums come out exact there too. The cluster is the stack's
 * optional `redis-cluster` service (started here when not running; stopped afterwards only if this file started
 * it and METERLINE_KEEP_STACK is not 1). Each partition's state carries one hash tag, so different partitions
 * land on different masters; the test checks that they really were spread.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureServices, stopStack } from '../../deploy/stack/index.ts';
import { CRASH_EVENTS, crashTest, KILLS } from '../support/crash-scenario.ts';
import { clusterKeysByNode } from '../support/harness.ts';

const PARTITIONS = 6;

let seeds = '';
let startedHere = false;

beforeAll(async () => {
  const result = await ensureServices(['redis-cluster']);
  seeds = result.env.REDIS_CLUSTER_URL as string;
  startedHere = result.started.includes('redis-cluster');
}, 120_000);

afterAll(async () => {
  if (startedHere && process.env.METERLINE_KEEP_STACK !== '1') await stopStack({ only: ['redis-cluster'] });
});

/** The hash tag of a key: `prefix:{topic/partition}:…` → `topic/partition`. */
function hashTag(key: string): string | undefined {
  return /\{([^}]+)\}/.exec(key)?.[1];
}

describe('crash test on Redis Cluster', () => {
  it(`counts ${CRASH_EVENTS} events exactly once through ${KILLS} kill -9s of the processor on 3 masters`, async () => {
    await crashTest(
      'cluster',
      { REDIS_URL: seeds, REDIS_CLUSTER: 'true' },
      {
        async afterVerify(prefix) {
          const byNode = await clusterKeysByNode(prefix, seeds);
          expect(byNode.size, 'masters in the cluster').toBe(3);
          // Every partition's keys sit on exactly one master (one slot), and all partitions left state behind.
          const nodeOfTag = new Map<string, Set<string>>();
          for (const [node, keys] of byNode) {
            for (const key of keys) {
              const tag = hashTag(key);
              expect(tag, `key without a hash tag: ${key}`).toBeDefined();
              const nodes = nodeOfTag.get(tag as string) ?? new Set<string>();
              nodes.add(node);
              nodeOfTag.set(tag as string, nodes);
            }
          }
          // Partition state is tagged `{topic/partition}`; the customer directory (`{customers}`) is not.
          const partitionTags = [...nodeOfTag.keys()].filter((tag) => tag.includes('/'));
          expect(partitionTags.length, `partitions with keys: ${[...nodeOfTag.keys()]}`).toBe(PARTITIONS);
          for (const [tag, nodes] of nodeOfTag) expect([...nodes], `masters holding ${tag}`).toHaveLength(1);
          // Spread: with 6 random hash tags over 3 masters, all on one master has a 0.4 % chance.
          const holding = [...byNode].filter(([, keys]) => keys.length > 0).map(([node]) => node);
          expect(
            holding.length,
            `masters holding keys of ${prefix}: ${[...byNode].map(([n, k]) => `${n}=${k.length}`).join(', ')}`,
          ).toBeGreaterThanOrEqual(2);
        },
      },
    );
  }, 600_000);
});
