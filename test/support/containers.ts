/**
 * Kafka and Redis for the tests through testcontainers, wherever a container engine answers: Docker with the
 * upstream images on a laptop; podman's Docker-compatible socket with images built from this host's files on
 * machines without a registry (METERLINE_TESTCONTAINERS_IMAGES=local, which deploy/containers/podman-service.sh sets).
 *
 * METERLINE_TESTCONTAINERS: `off` forces the local stack (deploy/stack/); `on` requires an engine (CI sets it,
 * so a broken engine fails the run instead of silently falling back); unset uses an engine when one answers.
 */
import { KafkaContainer } from '@testcontainers/kafka';
import { RedisContainer } from '@testcontainers/redis';
import { getContainerRuntimeClient, type StartedTestContainer, Wait } from 'testcontainers';
import {
  buildKafkaImage,
  buildRedisImage,
  LOCAL_KAFKA_IMAGE,
  LOCAL_REDIS_IMAGE,
} from '../../deploy/containers/images.ts';
import { REDIS_DURABILITY_ARGS } from '../../deploy/stack/redis.ts';

/** Upstream images for an engine that can pull: Confluent's layout is what @testcontainers/kafka drives. */
const UPSTREAM_KAFKA_IMAGE = 'confluentinc/cp-kafka:8.0.0';
const UPSTREAM_REDIS_IMAGE = 'redis:7.0.15';

/** The same broker settings as the local stack's server.properties (deploy/stack/kafka.ts). */
const KAFKA_SETTINGS: Record<string, string> = {
  KAFKA_NUM_PARTITIONS: '1',
  KAFKA_DEFAULT_REPLICATION_FACTOR: '1',
  KAFKA_MIN_INSYNC_REPLICAS: '1',
  KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
  KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '1',
  KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
  KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
  KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS: '1',
  KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: '1',
  KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: '1',
  KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
  KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
  KAFKA_LOG_RETENTION_HOURS: '168',
  KAFKA_LOG_SEGMENT_BYTES: '67108864',
  KAFKA_NUM_NETWORK_THREADS: '2',
  KAFKA_NUM_IO_THREADS: '4',
  KAFKA_HEAP_OPTS: '-Xms256m -Xmx512m',
};

export type ContainersMode = 'on' | 'off' | 'auto';

export function containersMode(env: NodeJS.ProcessEnv = process.env): ContainersMode {
  const value = (env.METERLINE_TESTCONTAINERS ?? 'auto').toLowerCase();
  if (value === 'on' || value === 'off' || value === 'auto') return value;
  throw new Error(`METERLINE_TESTCONTAINERS must be on, off or auto, not ${value}`);
}

/** Whether an engine answers (testcontainers' own discovery: DOCKER_HOST, the Docker socket, ...). */
export async function engineReachable(): Promise<boolean> {
  try {
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export interface TestContainers {
  env: { KAFKA_BROKERS: string; REDIS_URL: string };
  /** What started, with seconds, for the run's log. */
  summary: string;
  stop(): Promise<void>;
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

export async function startContainers(log: (line: string) => void): Promise<TestContainers> {
  const client = await getContainerRuntimeClient();
  const rt = client.info.containerRuntime;
  const engine = `${process.env.DOCKER_HOST ?? rt.remoteSocketPath} (${rt.operatingSystem}, server ${rt.serverVersion}, host ${rt.host})`;
  const local = process.env.METERLINE_TESTCONTAINERS_IMAGES === 'local';
  let kafkaImage = UPSTREAM_KAFKA_IMAGE;
  let redisImage = UPSTREAM_REDIS_IMAGE;
  if (local) {
    const t0 = Date.now();
    const [k, r] = await Promise.all([buildKafkaImage({ log }), buildRedisImage({ log })]);
    log(`local images: ${LOCAL_KAFKA_IMAGE} ${k}, ${LOCAL_REDIS_IMAGE} ${r} (${seconds(t0)})`);
    kafkaImage = LOCAL_KAFKA_IMAGE;
    redisImage = LOCAL_REDIS_IMAGE;
  }
  const times: Record<string, string> = {};
  const timed = async <T>(name: string, start: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const started = await start();
    times[name] = seconds(t0);
    return started;
  };
  const results = await Promise.allSettled([
    timed('kafka', () =>
      new KafkaContainer(kafkaImage)
        .withEnvironment(KAFKA_SETTINGS)
        // KafkaContainer otherwise returns before the broker listens.
        .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
        .start(),
    ),
    timed('redis', () =>
      new RedisContainer(redisImage)
        // Mapped-port traffic is NAT'd, so protected mode would refuse it; durability as in the stack.
        .withCommand(['redis-server', '--protected-mode', 'no', ...REDIS_DURABILITY_ARGS])
        .withWaitStrategy(Wait.forLogMessage('Ready to accept connections'))
        .start(),
    ),
  ]);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value as StartedTestContainer] : []));
  const stop = async () => {
    await Promise.all(started.map((c) => c.stop({ timeout: 5_000 }).catch(() => {})));
  };
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  const [kafka, redis] = started as [StartedTestContainer, StartedTestContainer];
  return {
    env: {
      KAFKA_BROKERS: `${kafka.getHost()}:${kafka.getMappedPort(9093)}`,
      REDIS_URL: `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`,
    },
    summary:
      `testcontainers on ${engine}: kafka ${kafkaImage} started in ${times.kafka}, ` +
      `redis ${redisImage} started in ${times.redis}`,
    stop,
  };
}
