import { describe, expect, it } from 'vitest';
import { EventDecoder } from '../../../src/ingest/decoder.ts';
import type { ValidationContext } from '../../../src/metering/usage-event.ts';
import { badInputCorpus } from '../../support/bad-input-corpus.ts';

const NOW = Date.parse('2026-11-27T17:20:00Z');
const ctx: ValidationContext = {
  nowMs: NOW,
  maxFutureSkewMs: 5 * 60_000,
  submitMarginMs: 3_600_000,
  dimensions: new Set(['api_calls']),
  maxMessageBytes: 16_384,
};

describe('the bad-input corpus', () => {
  const corpus = badInputCorpus(NOW);
  it('has at least 30 kinds', () => {
    expect(new Set(corpus.map((c) => c.kind)).size).toBeGreaterThanOrEqual(30);
  });
  it.each(corpus.map((c) => [c.kind, c]))('%s → its reason code', async (_, c) => {
    const value = c.value === null ? null : Buffer.from(c.value);
    const r = await new EventDecoder().decode(value, ctx);
    expect(r.ok ? 'accepted' : r.reason).toBe(c.reason);
  });
});
