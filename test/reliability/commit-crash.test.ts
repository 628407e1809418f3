/**
 * Invariant 2 at the commit stage's two gaps: the real CLI kill -9s itself right after an hour is frozen
 * (before its records are on the submission topic), and, on restart, right after they are emitted
 * (before the hour is marked). After a clean restart the emulator holds exactly one record per customer,
 * dimension and hour, with the right quantity, and AWS never saw a conflicting record.
 */
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { eventMessage, produceMessages } from '../../src/produce/producer.ts';
import { syntheticEvents } from '../../src/produce/synthetic.ts';
import { spawnMeterline, stopGracefully } from '../support/child.ts';
import { testKafka, uniqueId, waitFor } from '../support/harness.ts';
import {
  acceptedAtAws,
  awsIdOf,
  expectedAccepted,
  frozenRecords,
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../support/pipeline-env.ts';

const kafka = testKafka();
const tenants = Object.keys(TEST_CUSTOMERS);

describe('a crash between freezing and emitting, and between emitting and marking', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  afterAll(async () => {
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  it('still bills each customer, dimension and hour exactly once, with the frozen quantity', async () => {
    emulator = await startEmulator({ customers: tenants.map(awsIdOf) });
    tp = testPipeline('commit-crash', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
    const events = [
      ...syntheticEvents({
        count: 3_000,
        customers: tenants,
        dimensions: ['api_calls', 'jobs'],
        hours: 3,
        nowMs: Date.now(),
        duplicateRate: 0.01,
        seed: 5,
        idPrefix: tp.run,
      }),
    ];
    await tp.createTopics(kafka);
    await produceMessages(events.map(eventMessage), { kafka, topic: tp.topics.usage });
    const logFile = join(tmpdir(), `${uniqueId('commit-crash')}.log`);

    for (const killAt of ['after-freeze', 'after-emit']) {
      const child = spawnMeterline(['run'], { ...tp.env, METERLINE_TEST_KILL_AT: killAt }, logFile);
      const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
      // Only the kill point can end this process with SIGKILL: the crash landed where intended.
      expect({ killAt, code, signal }).toEqual({ killAt, code: null, signal: 'SIGKILL' });
    }
    // The kill after emitting left an emitted hour unmarked: its records must be on the topic already.
    const beforeRestart = await readAllMessages(kafka, tp.topics.submissions);
    expect(beforeRestart.length).toBeGreaterThan(0);

    const child = spawnMeterline(['run'], tp.env, logFile);
    try {
      const expected = expectedAccepted(events);
      const accepted = () => acceptedAtAws(emulator);
      await waitFor(() => (accepted().size >= expected.size ? true : undefined), {
        timeoutMs: 120_000,
        describe: () => `${accepted().size} of ${expected.size} records accepted (log: ${logFile})`,
      });
      expect(accepted()).toEqual(expected);
      expect(emulator.state.snapshot().duplicates).toBe(0);
      // Re-emissions carry the same id and quantity (frozenRecords throws otherwise); the hour emitted
      // before the kill was emitted again after it.
      const messages = await readAllMessages(kafka, tp.topics.submissions);
      const unique = frozenRecords(messages);
      expect(unique.size).toBe(expected.size);
      expect(messages.length).toBeGreaterThan(unique.size);
      expect(await readAllMessages(kafka, tp.topics.failed)).toEqual([]);
    } finally {
      await stopGracefully(child);
    }
  });
});
