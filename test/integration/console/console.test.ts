/**
 * Issue 22: the operator console in a real Chromium against the real stack after a demo-like run:
 * `meterline produce` → `meterline processor` and `worker` (traced into Jaeger) → the emulator, then
 * `meterline console` read by a browser. Its numbers are the CLI's, its grid shows every accepted hour,
 * a record shows AWS's answer and its trace; a redrive from the browser reaches AWS and the audit log; the
 * read-only role cannot redrive; nothing loads unsigned; a forged CSRF token is refused; axe passes.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureServices, OTLP_ENV } from '../../../deploy/stack/index.ts';
import type { PipelineStatus } from '../../../src/cli/status-command.ts';
import type { AuditEntry } from '../../../src/console/audit.ts';
import { type RunningEmulator, startEmulator } from '../../../src/emulator/server.ts';
import type { FailedRecord } from '../../../src/metering/dlq-envelope.ts';
import { recordId } from '../../../src/metering/submission-record.ts';
import { produceMessages } from '../../../src/produce/producer.ts';
import { HOUR_MS } from '../../../src/time/hours.ts';
import { killHard, spawnMeterline, stopGracefully } from '../../support/child.ts';
import { testKafka, uniqueId, waitFor } from '../../support/harness.ts';
import {
  readAllMessages,
  TEST_CUSTOMERS,
  type TestPipeline,
  testPipeline,
} from '../../support/pipeline-env.ts';
import { axeViolations, csrfOf, launchChromium, newContext, signIn } from './browser.ts';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const IMG = join(ROOT, 'docs/img');
const MAIN = join(ROOT, 'src/cli/main.ts');
const kafka = testKafka();
const OPERATOR = { name: 'ana', token: `op-${'a1'.repeat(16)}` };
const VIEWER = { name: 'vic', token: `ro-${'b2'.repeat(16)}` };
const HOOLI = '444444444444';
const customers = {
  ...TEST_CUSTOMERS,
  // Mapped, but not subscribed at AWS until the test says so: its records are dead-lettered first.
  hooli: { customerAwsAccountId: HOOLI, licenseArn: `arn:aws:license-manager::${HOOLI}:license:l-d4` },
};
const billable = ['111111111111', '222222222222', '333333333333', 'cust-umbrella'];
const HOURS = 2;

let tp: TestPipeline | undefined;
let emulator: RunningEmulator | undefined;
let browser: Browser | undefined;
let base = '';
const children: ChildProcess[] = [];
const contexts: BrowserContext[] = [];

function freePort(): Promise<number> {
  const server = createServer();
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    }),
  );
}

function cliJson<T>(args: string[], env: Record<string, string>): Promise<T> {
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      ['--disable-warning=TimeoutNegativeWarning', MAIN, ...args],
      { env: { ...process.env, ...env, [OTLP_ENV]: '' } },
      (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

const failed = async () =>
  (await readAllMessages(kafka, (tp as TestPipeline).topics.failed)).map((m) => ({
    id: `${m.partition}:${m.offset}`,
    envelope: JSON.parse(String(m.value)) as FailedRecord,
  }));

async function signedIn(who: { token: string }): Promise<Page> {
  const context = await newContext(browser as Browser, base);
  contexts.push(context);
  const page = await context.newPage();
  await signIn(page, who.token);
  return page;
}

async function expectAccessible(page: Page): Promise<void> {
  expect(await axeViolations(page), page.url()).toEqual([]);
}

beforeAll(async () => {
  const { env: stack } = await ensureServices(['jaeger'], { log: () => {} });
  // A Jaeger already running (the developer's stack) is named by the environment, not by ensureServices.
  const otlp = stack[OTLP_ENV] ?? process.env[OTLP_ENV];
  const jaegerUrl = stack.METERLINE_JAEGER_URL ?? process.env.METERLINE_JAEGER_URL;
  if (!otlp || !jaegerUrl) throw new Error('no Jaeger: the record page needs traces');
  emulator = await startEmulator({ customers: billable });
  tp = testPipeline('console', {
    env: {
      AWS_ENDPOINT_URL_MARKETPLACE_METERING: emulator.url,
      [OTLP_ENV]: otlp,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    },
    customers,
  });
  await tp.createTopics(kafka);
  const log = (role: string) => join(tmpdir(), `${uniqueId(`console-${role}`)}.log`);
  children.push(spawnMeterline(['processor'], tp.env, log('processor')));
  children.push(spawnMeterline(['worker'], tp.env, log('worker')));
  const producer = spawnMeterline(
    [
      'produce',
      '--count',
      '400',
      '--customers',
      [...Object.keys(customers)].join(','),
      '--hours',
      String(HOURS),
      '--no-progress',
    ],
    tp.env,
    log('produce'),
  );
  const [code] = (await once(producer, 'exit')) as [number | null];
  expect(code).toBe(0);
  // One event past its AWS deadline: a dead letter that a redrive must refuse.
  const old = {
    id: uniqueId('old'),
    customer: 'acme',
    dimension: 'jobs',
    quantity: 1,
    timestamp: Date.now() - 3 * 24 * HOUR_MS,
  };
  await produceMessages([{ key: 'acme', value: JSON.stringify(old) }], { kafka, topic: tp.topics.usage });
  const accepted = () => emulator?.state.snapshot().records ?? [];
  const want = billable.length * 2 * HOURS;
  await waitFor(() => (accepted().length >= want ? true : undefined), {
    timeoutMs: 180_000,
    intervalMs: 1_000,
    describe: () => `${accepted().length} of ${want} records accepted`,
  });
  await waitFor(async () => ((await failed()).length >= 2 * HOURS + 1 ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 1_000,
    describe: () => 'the dead letters of hooli and the old event',
  });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  children.push(
    spawnMeterline(
      ['console'],
      {
        ...tp.env,
        [OTLP_ENV]: '',
        METERLINE_JAEGER_URL: jaegerUrl,
        METERLINE_CONSOLE_PORT: String(port),
        METERLINE_CONSOLE_TOKENS: `${OPERATOR.name}:operator:${OPERATOR.token},${VIEWER.name}:viewer:${VIEWER.token}`,
        METERLINE_TOPIC_AUDIT: `${tp.run}-audit`,
      },
      log('console'),
    ),
  );
  await waitFor(
    async () => ((await fetch(`${base}/healthz`).catch(() => undefined))?.ok ? true : undefined),
    { timeoutMs: 30_000, describe: () => `the console on ${base}` },
  );
  browser = await launchChromium();
  mkdirSync(IMG, { recursive: true });
}, 1_500_000);

afterAll(async () => {
  for (const c of contexts) await c.close();
  await browser?.close();
  for (const c of children) await stopGracefully(c).catch(() => killHard(c));
  await emulator?.close();
  await tp?.cleanup(kafka);
  await kafka
    .admin()
    .connect()
    .catch(() => {});
});

describe('the operator console in Chromium', () => {
  it('loads no page without signing in', async () => {
    const context = await newContext(browser as Browser, base);
    contexts.push(context);
    const page = await context.newPage();
    for (const path of [
      '/',
      '/customers',
      '/customers/acme',
      '/record?id=x',
      '/dlq',
      '/dlq/entry?id=0:0',
      '/reconcile',
      '/audit',
    ]) {
      await page.goto(path);
      expect(new URL(page.url()).pathname, path).toBe('/signin');
      await expect(page.getByRole('heading', { level: 1 }).textContent()).resolves.toBe('Sign in');
    }
    await expectAccessible(page);
    const post = await page.request.post('/dlq/redrive', {
      form: { mode: 'redrive', confirm: 'yes', id: '0:0' },
    });
    expect(post.status()).toBe(401);
    await page.getByLabel('Access token').fill('not-a-token-not-a-token-x');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page.getByRole('alert').textContent()).resolves.toContain('not valid');
  });

  it('shows the overview with the numbers of `meterline status`', async () => {
    const status = await cliJson<PipelineStatus>(
      ['status', '-o', 'json', '--top', '10'],
      (tp as TestPipeline).env,
    );
    const page = await signedIn(OPERATOR);
    const text = (selector: string) => page.locator(selector).first().textContent();
    expect(await text('[data-field=workerLag]')).toBe(status.workerLag);
    expect(await text('[data-field=oldestUnsubmittedHour]')).toBe(
      status.oldestUnsubmittedHour ?? 'No hour waiting in the processor.',
    );
    for (const p of status.partitions) expect(await text(`[data-lag="${p.partition}"]`)).toBe(p.lag);
    for (const [reason, n] of Object.entries(status.deadLetters))
      expect(await text(`[data-reason="${reason}"]`)).toBe(String(n));
    expect(await page.locator('[data-reason]').count()).toBe(Object.keys(status.deadLetters).length);
    for (const c of status.lastAccepted)
      expect(await text(`[data-last-accepted="${c.customer}"]`)).toBe(c.hour);
    expect(Number(await text('[data-field=accepted]'))).toBe(billable.length * 2 * HOURS);
    await expectAccessible(page);
    await page.screenshot({ path: join(IMG, 'console-overview.png'), fullPage: true });
    // At a tablet's width the page does not scroll sideways: wide tables scroll in their own box.
    await page.setViewportSize({ width: 768, height: 1024 });
    expect(await page.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(768);
  });

  it("shows every hour AWS accepted in a customer's grid", async () => {
    const page = await signedIn(OPERATOR);
    await page.goto('/customers');
    await expect(page.getByRole('link', { name: 'acme', exact: true }).count()).resolves.toBe(1);
    await expectAccessible(page);
    await page.getByRole('link', { name: 'acme', exact: true }).click();
    const acme = (emulator as RunningEmulator).state
      .snapshot()
      .records.filter((r) => r.customer === '111111111111');
    expect(acme.length).toBe(2 * HOURS);
    for (const r of acme) {
      const cell = page.locator(`td[data-dimension="${r.dimension}"][data-hour="${r.timestamp}"]`);
      await expect(cell.getAttribute('data-state'), `${r.dimension} ${r.timestamp}`).resolves.toBe(
        'accepted',
      );
      await expect(cell.textContent()).resolves.toBe(String(r.quantity));
    }
    await expectAccessible(page);
  });

  it('shows the internal reconciliation of the last 48 hours', async () => {
    const page = await signedIn(VIEWER);
    await page.goto('/reconcile');
    // Every accepted record balances; hooli's dead letters do not.
    expect(Number(await page.locator('[data-field=balanced]').textContent())).toBe(
      billable.length * 2 * HOURS,
    );
    expect(Number(await page.locator('[data-field=unbalanced]').textContent())).toBeGreaterThan(0);
    await expectAccessible(page);
  });

  it("shows a record's AWS answer and its trace as a waterfall", async () => {
    const page = await signedIn(OPERATOR);
    const r = (emulator as RunningEmulator).state
      .snapshot()
      .records.find((x) => x.customer === '111111111111');
    if (!r) throw new Error('no acme record accepted');
    const id = recordId('prod-test', 'acme', r.dimension, Date.parse(r.timestamp));
    // Spans reach Jaeger in batches: the page is read again until the AWS call's span is in the trace.
    await waitFor(
      async () => {
        await page.goto(`/record?id=${encodeURIComponent(id)}`);
        return (await page.locator('[data-aws-status]').count()) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1_000, describe: () => `the trace of ${id} in Jaeger` },
    );
    await expect(page.locator('[data-field=metering-record-id]').textContent()).resolves.toBe(
      r.meteringRecordId,
    );
    await expect(page.locator('[data-aws-status]').first().textContent()).resolves.toBe('Success');
    expect(await page.locator('table.waterfall svg.bar rect').count()).toBeGreaterThanOrEqual(3);
    await expectAccessible(page);
    await page.screenshot({ path: join(IMG, 'console-record.png'), fullPage: true });
  });
});

describe('dead letters from the browser', () => {
  it('redrives one with a dry run and a confirmation: AWS accepts it, the audit log names the operator', async () => {
    const entries = await failed();
    const target = entries.find((e) => e.envelope.record?.customer === 'hooli');
    const old = entries.find((e) => e.envelope.reason === 'too_old');
    if (!target || !old) throw new Error('the dead letters are missing');
    // AWS now has the buyer's subscription: the record AWS refused before is billable.
    (emulator as RunningEmulator).state.subscribe([HOOLI]);
    const page = await signedIn(OPERATOR);
    await page.goto('/dlq?customer=hooli');
    await expectAccessible(page);
    await page.goto('/dlq');
    await page.getByLabel(`select entry ${target.id}`).check();
    await page.getByLabel(`select entry ${old.id}`).check();
    await page.getByRole('button', { name: /Dry run/ }).click();
    await expect(page.locator(`[data-outcome="${target.id}"]`).textContent()).resolves.toBe('would be sent');
    // Past the deadline: refused, with the reason.
    await expect(page.locator(`[data-outcome="${old.id}"]`).textContent()).resolves.toBe('refused');
    await expect(page.getByText(/past its AWS deadline/).count()).resolves.toBe(1);
    await expectAccessible(page);
    await page.getByLabel(/I confirm/).check();
    await page.getByRole('button', { name: 'Redrive 1 entries' }).click();
    await expect(page.locator(`[data-outcome="${target.id}"]`).textContent()).resolves.toBe('sent');

    const record = target.envelope.record as NonNullable<FailedRecord['record']>;
    await waitFor(
      () =>
        (emulator as RunningEmulator).state
          .snapshot()
          .records.find(
            (r) =>
              r.customer === HOOLI &&
              r.dimension === record.dimension &&
              r.timestamp === record.hour.replace('.000Z', 'Z'),
          ),
      { timeoutMs: 60_000, describe: () => `the redriven record ${record.recordId} at AWS` },
    );
    const audit = (await readAllMessages(kafka, `${(tp as TestPipeline).run}-audit`)).map(
      (m) => JSON.parse(String(m.value)) as AuditEntry,
    );
    expect(audit.map((a) => [a.who, a.phase, a.entries])).toEqual([
      [OPERATOR.name, 'requested', [target.id]],
      [OPERATOR.name, 'done', [target.id]],
    ]);
    expect(audit[1]?.outcomes).toEqual([
      { id: target.id, kind: 'redriven', detail: (tp as TestPipeline).topics.submissions },
    ]);
    await page.goto('/audit');
    await expect(page.locator('[data-audit-who]').first().textContent()).resolves.toBe(OPERATOR.name);
    await expectAccessible(page);
    await page.goto(`/dlq/entry?id=${encodeURIComponent(old.id)}`);
    await expect(page.locator('[data-field=envelope]').textContent()).resolves.toContain('too_old');
    await expectAccessible(page);
  });

  it('gives the read-only role no redrive button, and refuses its POST', async () => {
    const page = await signedIn(VIEWER);
    await page.goto('/dlq');
    expect(await page.locator('[data-entry]').count()).toBeGreaterThan(0);
    expect(await page.locator('[data-redrive]').count()).toBe(0);
    expect(await page.locator('input[name=id]').count()).toBe(0);
    await expectAccessible(page);
    const entry = (await failed()).find((e) => e.envelope.record?.customer === 'hooli' && e.id);
    const post = await page.request.post('/dlq/redrive', {
      form: { _csrf: await csrfOf(page), mode: 'redrive', confirm: 'yes', id: entry?.id ?? '' },
    });
    expect(post.status()).toBe(403);
    const audit = await readAllMessages(kafka, `${(tp as TestPipeline).run}-audit`);
    expect(audit.map((m) => (JSON.parse(String(m.value)) as AuditEntry).who)).not.toContain(VIEWER.name);
  });

  it('refuses a forged CSRF token', async () => {
    const page = await signedIn(OPERATOR);
    await page.goto('/dlq');
    const real = await csrfOf(page);
    const forged = `${real.slice(0, -4)}${real.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    const entry = (await failed()).find((e) => e.envelope.record?.customer === 'hooli');
    for (const token of [forged, '']) {
      const post = await page.request.post('/dlq/redrive', {
        form: { _csrf: token, mode: 'dry-run', id: entry?.id ?? '' },
      });
      expect(post.status()).toBe(403);
    }
    // The same request with the page's own token is answered.
    const ok = await page.request.post('/dlq/redrive', {
      form: { _csrf: real, mode: 'dry-run', id: entry?.id ?? '' },
    });
    expect(ok.status()).toBe(200);
  });
});
