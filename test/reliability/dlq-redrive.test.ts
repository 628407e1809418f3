/**
 * The DLQ round trip through the real CLI: a record dead-lettered as `customer_not_subscribed` is
 * redriven once the customer subscribes, and AWS accepts it; a record past its deadline is refused with
 * the reason; a second redrive sends nothing again. Every envelope matches the published schema.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { type RunningPipeline, startPipeline } from '../../src/app/pipeline.ts';
import type { PipelineStatus } from '../../src/cli/status-command.ts';
import { type RunningEmulator, startEmulator } from '../../src/emulator/server.ts';
import { makeSubmissionRecord } from '../../src/metering/submission-record.ts';
import { produceMessages } from '../../src/produce/producer.ts';
import { HOUR_MS, hourStart } from '../../src/time/hours.ts';
import { failedRecordValidator, testKafka, testLogger, waitFor } from '../support/harness.ts';
import { readAllMessages, TEST_CUSTOMERS, type TestPipeline, testPipeline } from '../support/pipeline-env.ts';

const kafka = testKafka();
const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const exec = promisify(execFile);

describe('the failed-records topic', () => {
  let tp: TestPipeline | undefined;
  let emulator: RunningEmulator | undefined;
  let pipeline: RunningPipeline | undefined;
  afterAll(async () => {
    await pipeline?.stop();
    await emulator?.close();
    await tp?.cleanup(kafka);
  });

  const cli = async (...args: string[]) =>
    (await exec(process.execPath, [MAIN, 'dlq', ...args], { env: { ...process.env, ...tp?.env } })).stdout;

  it('redrives a record once its customer subscribes, and refuses one past its deadline', async () => {
    emulator = await startEmulator({ customers: [TEST_CUSTOMERS.acme.customerAwsAccountId] });
    tp = testPipeline('dlq', { env: { AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url } });
    await tp.createTopics(kafka);
    pipeline = await startPipeline(tp.config(['worker']), testLogger(), { processor: false, worker: true });

    const record = (customer: string, hourMs: number, quantity: number) =>
      makeSubmissionRecord({
        productCode: 'prod-test',
        customer,
        dimension: 'api_calls',
        hourMs,
        quantity,
        api: 'BatchMeterUsage',
        finalizedAtMs: Date.now(),
      });
    const unsubscribed = record('globex', hourStart(Date.now()) - HOUR_MS, 4);
    const stale = record('acme', hourStart(Date.now()) - 30 * HOUR_MS, 9);
    await produceMessages(
      [unsubscribed, stale].map((r) => ({ key: r.customer, value: JSON.stringify(r) })),
      { kafka, topic: tp.topics.submissions },
    );
    const failed = await waitFor(async () => {
      const m = await readAllMessages(kafka, tp?.topics.failed as string);
      return m.length >= 2 ? m.map((x) => JSON.parse(String(x.value))) : undefined;
    });
    expect(Object.fromEntries(failed.map((f) => [f.record.customer, f.reason]))).toEqual({
      globex: 'customer_not_subscribed',
      acme: 'deadline_exceeded',
    });

    // Every envelope matches the published JSON Schema.
    const validate = failedRecordValidator();
    for (const f of failed) expect(validate(f), JSON.stringify(validate.errors)).toBe(true);
    expect(failed.find((f) => f.reason === 'customer_not_subscribed')).toMatchObject({
      deadline: unsubscribed.deadline,
      lastError: { code: 'customer_not_subscribed' },
    });

    // The alert metrics count them, by stage and reason; the process reports itself ready.
    const ops = `http://127.0.0.1:${pipeline.ops?.port}`;
    const exposition = await (await fetch(`${ops}/metrics`)).text();
    expect(exposition).toContain(
      'meterline_dead_letters_total{stage="submit",reason="customer_not_subscribed"} 1',
    );
    expect(exposition).toContain('meterline_dead_letters_total{stage="submit",reason="deadline_exceeded"} 1');
    expect((await fetch(`${ops}/readyz`)).status).toBe(200);
    expect((await fetch(`${ops}/healthz`)).status).toBe(200);

    const status = JSON.parse(
      (await exec(process.execPath, [MAIN, 'status', '--json'], { env: { ...process.env, ...tp.env } }))
        .stdout,
    );
    expect(status.deadLetters).toEqual({ customer_not_subscribed: 1, deadline_exceeded: 1 });
    expect(status.partitions).toHaveLength(3);

    // --json is -o json: one JSON array.
    const listed = JSON.parse(await cli('list', '--json')) as { reason: string }[];
    expect(listed.map((l) => l.reason).sort()).toEqual(['customer_not_subscribed', 'deadline_exceeded']);

    emulator.state.subscribe([TEST_CUSTOMERS.globex.customerAwsAccountId]);
    const dry = await cli('redrive', '--dry-run');
    expect(dry).toMatch(/would-redrive/);
    expect(emulator.state.snapshot().records).toHaveLength(0);

    const out = await cli('redrive', '--filter', 'stage=submit');
    expect(out).toMatch(/refused .* \(deadline_exceeded\): past its deadline/);
    const accepted = await waitFor(() => emulator?.state.snapshot().records.find((r) => r.quantity === 4));
    expect(accepted).toMatchObject({
      customer: TEST_CUSTOMERS.globex.customerAwsAccountId,
      dimension: 'api_calls',
    });

    // Nothing is sent twice: the redriven entry is marked, the stale one is refused again.
    const again = await cli('redrive');
    // Piped: plain columns, no box characters.
    expect(again).toMatch(/^total\s+0\s+1\s+1$/m);
    expect(again).not.toMatch(/[\u2500-\u257f]/);
    expect(emulator.state.snapshot().records).toHaveLength(1);
    expect(emulator.state.snapshot().duplicates).toBe(0);

    // `status` lists the customer's last accepted hour: the redriven one; a filter that matches
    // nobody lists nobody.
    const after = JSON.parse(
      (await exec(process.execPath, [MAIN, 'status', '--json'], { env: { ...process.env, ...tp.env } }))
        .stdout,
    ) as PipelineStatus;
    expect(after.lastAccepted).toEqual([
      { customer: 'globex', hour: new Date(accepted.timestamp).toISOString() },
    ]);
    const none = JSON.parse(
      (
        await exec(process.execPath, [MAIN, 'status', '--json', '--customer', 'nobody'], {
          env: { ...process.env, ...tp.env },
        })
      ).stdout,
    ) as PipelineStatus;
    expect(none.lastAccepted).toEqual([]);
  });
});
