/**
 * docs/troubleshooting.md has a row, with an action for the seller, for every reason code that can reach the
 * failed-records topic. The codes are read from the code that dead-letters: the ingest reasons
 * (src/metering/usage-event.ts), the commit stage's envelopes (src/commit/hour-emitter.ts), the worker's
 * (src/submit/worker.ts) and the AWS errors it dead-letters by their code (src/metering/aws-errors.ts). And every
 * code of src/errors.ts is either in the table or listed below with why it never reaches the topic, so a new
 * code fails here until it is placed.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../../src/errors.ts';
import { ROOT, readDoc } from '../../support/markdown.ts';

/** Codes that never name a dead letter, and why. */
const NEVER_DEAD_LETTERED: Record<string, string> = {
  config_invalid: 'start-up refuses the configuration',
  aws_throttled: 'retried with backoff; at the deadline the record is deadline_exceeded',
  aws_unavailable: 'retried with backoff; at the deadline the record is deadline_exceeded',
  aws_unprocessed: 'retried with backoff; at the deadline the record is deadline_exceeded',
  registration_token_invalid: 'an answer to the buyer on the registration URL',
  registration_token_expired: 'an answer to the buyer on the registration URL',
  product_not_in_plan: 'an answer to the buyer on the registration URL',
  lifecycle_event_invalid: 'an answer to SNS or EventBridge, counted in metrics',
  lifecycle_event_unauthorized: 'an answer to SNS or EventBridge, counted in metrics',
  fenced: 'the batch is dropped by the instance that lost the partition; its owner applies it',
  stale_batch: 'the batch is re-read from the checkpoint',
  state_lost: 'the partition is rebuilt from Kafka',
  store_behind: 'the partition is replayed from Redis checkpoint',
  redis_error: 'the stage retries',
  kafka_error: 'the stage retries',
  registry_unavailable: 'the batch is retried, never dead-lettered',
  tracing_unavailable: '`meterline trace` fails with exit 3',
  sns_message_invalid: 'an answer to SNS',
  sns_signature_invalid: 'an answer to SNS',
  sns_cert_unavailable: 'an answer to SNS, which delivers again',
  handoff_token_invalid: '`meterline handoff verify` and the link endpoint refuse the token',
  handoff_token_expired: '`meterline handoff verify` and the link endpoint refuse the token',
  handoff_token_reused: '`meterline handoff verify` and the link endpoint refuse the token',
  tenant_invalid: 'the link endpoint refuses the call',
  tenant_taken: 'the link endpoint refuses the call',
  subscription_not_found: 'the link endpoint refuses the call',
};

const source = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const quoted = (text: string) => [...text.matchAll(/'([a-z][a-z0-9_]*)'/g)].map((m) => m[1] as string);
const known = new Set<string>(ERROR_CODES);

/** The rows of the reason table: stage, reason and the seller's action. */
function tableRows(): { stage: string; reason: string; action: string }[] {
  return readDoc('docs/troubleshooting.md')
    .split('\n')
    .map((l) => /^\|\s*(ingest|commit|submit)\s*\|\s*`([a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ stage: m[1] as string, reason: m[2] as string, action: (m[4] as string).trim() }));
}

/** stage|reason pairs the code can dead-letter. */
function reachable(): Set<string> {
  const out = new Set<string>();
  const event = source('src/metering/usage-event.ts');
  const ingest = /export type IngestReason = Extract<[\s\S]*?>;/.exec(event)?.[0] ?? '';
  for (const c of quoted(ingest)) out.add(`ingest|${c}`);
  for (const m of source('src/commit/hour-emitter.ts').matchAll(/reason: '([a-z_]+)'/g))
    out.add(`commit|${m[1]}`);
  const worker = source('src/submit/worker.ts');
  for (const m of worker.matchAll(/reason: '([a-z_]+)'/g)) out.add(`submit|${m[1]}`);
  for (const m of worker.matchAll(/#deadLetter\(\s*[^,]+,\s*'([a-z_]+)'/g)) out.add(`submit|${m[1]}`);
  // The worker dead-letters AWS's final answers by their own code (failure.code).
  for (const c of quoted(source('src/metering/aws-errors.ts')))
    if (known.has(c) && !(c in NEVER_DEAD_LETTERED)) out.add(`submit|${c}`);
  return out;
}

describe('docs/troubleshooting.md', () => {
  const rows = tableRows();
  const documented = new Set(rows.map((r) => `${r.stage}|${r.reason}`));

  it('has a row with an action for every stage and reason the code dead-letters', () => {
    const found = reachable();
    expect(found.size).toBeGreaterThan(25);
    expect([...found].filter((r) => !documented.has(r))).toEqual([]);
  });

  it('places every error code: a row in the table, or a reason it never reaches the topic', () => {
    const inTable = new Set(rows.map((r) => r.reason));
    expect(ERROR_CODES.filter((c) => !inTable.has(c) && !(c in NEVER_DEAD_LETTERED))).toEqual([]);
    expect(Object.keys(NEVER_DEAD_LETTERED).filter((c) => inTable.has(c) || !known.has(c))).toEqual([]);
  });

  it('names only real codes, each once per stage, each with an action', () => {
    expect(rows.filter((r) => !known.has(r.reason))).toEqual([]);
    expect(documented.size).toBe(rows.length);
    expect(rows.filter((r) => r.action.length < 10)).toEqual([]);
  });
});
