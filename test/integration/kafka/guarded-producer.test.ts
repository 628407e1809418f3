/**
 * A send never waits past its deadline: a "broker" that accepts connections and never answers (a network
 * path that went mute) makes the send fail with a retriable error within METERLINE_PRODUCE_TIMEOUT (its
 * default here), reported as not ready, and not yet as dead.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { isMeterlineError } from '../../../src/errors.ts';
import { createKafka } from '../../../src/kafka/client.ts';
import { GuardedProducer, ProduceHealth } from '../../../src/kafka/guarded-producer.ts';
import { testLogger } from '../../support/harness.ts';
import { testPipeline } from '../../support/pipeline-env.ts';

describe('a send to a broker that never answers', () => {
  const sockets = new Set<Socket>();
  let mute: Server | undefined;
  let producer: GuardedProducer | undefined;
  afterAll(async () => {
    await producer?.disconnect();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => mute?.close(resolve));
  });

  it('fails at its deadline with a retriable error, and makes the process not ready', async () => {
    mute = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => mute?.listen(0, '127.0.0.1', resolve));
    const port = (mute.address() as { port: number }).port;
    const config = testPipeline('guarded').config(['processor']);
    const health = new ProduceHealth(config.produce.unhealthyAfterMs);
    const logger = testLogger();
    producer = new GuardedProducer({
      kafka: createKafka({ brokers: [`127.0.0.1:${port}`], clientId: 'guarded-test', logger }),
      name: 'processor',
      idempotent: true,
      timeoutMs: config.produce.timeoutMs,
      health,
      logger,
    });

    const error = await producer.send({ topic: 'anything', acks: -1, messages: [{ value: 'x' }] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isMeterlineError(error) && { code: error.code, retriable: error.retriable }).toEqual({
      code: 'kafka_error',
      retriable: true,
    });
    expect(String((error as Error).message)).toContain(`no answer within ${config.produce.timeoutMs} ms`);
    expect(health.notReady()).toEqual([
      expect.stringContaining('producer processor cannot send to anything'),
    ]);
    expect(health.notLive()).toEqual([]);
  });
});
