import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { decodeJsonEvent } from '../../../src/ingest/event.ts';
import type { ValidationContext } from '../../../src/metering/usage-event.ts';

const NOW = Date.parse('2026-11-27T17:20:00Z');
const ctx: ValidationContext = {
  nowMs: NOW,
  maxFutureSkewMs: 5 * 60_000,
  submitMarginMs: 60 * 60_000,
  dimensions: new Set(['api_calls', 'storage_gb']),
  maxMessageBytes: 2048,
};

const good = {
  id: 'e-1',
  customer: 'tenant-a',
  dimension: 'api_calls',
  quantity: 3,
  timestamp: '2026-11-27T16:10:00Z',
};
const bytes = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

describe('event validation', () => {
  it('accepts a valid event and converts the quantity to exact micro-units', () => {
    const r = decodeJsonEvent(bytes({ ...good, quantity: 0.1, tags: { team: 'blue' } }), ctx);
    expect(r).toEqual({
      ok: true,
      event: {
        id: 'e-1',
        customer: 'tenant-a',
        dimension: 'api_calls',
        micros: 100_000,
        timestampMs: Date.parse('2026-11-27T16:10:00Z'),
        tags: { team: 'blue' },
      },
    });
  });

  it('bills usage whose tags AWS would refuse as untagged, and says why', () => {
    for (const [tags, why] of [
      [{ a: '1', b: '2', c: '3', d: '4', e: '5', f: '6' }, '"tags" has 6 entries; AWS takes at most 5'],
      [{ team: 'blue~green' }, 'tag "team" has a value AWS does not allow'],
      [{ ['k'.repeat(101)]: 'v' }, `tag key "${'k'.repeat(101)}" is not allowed by AWS`],
    ] as const) {
      const r = decodeJsonEvent(bytes({ ...good, tags }), ctx);
      expect(r.ok && r.event).toMatchObject({ micros: 3_000_000, untagged: why });
      expect(r.ok && 'tags' in r.event).toBe(false);
    }
  });

  const cases: [string, Buffer | null, string][] = [
    ['a tombstone', null, 'tombstone'],
    ['an empty value', Buffer.alloc(0), 'empty_message'],
    ['an oversized message', bytes({ ...good, pad: 'x'.repeat(4000) }), 'message_too_large'],
    ['broken JSON', bytes('{"id": "e-1", '), 'malformed_json'],
    ['a JSON array', bytes([good]), 'schema_violation'],
    ['a missing field', bytes({ ...good, customer: undefined }), 'schema_violation'],
    ['a quantity string', bytes({ ...good, quantity: '3' }), 'schema_violation'],
    ['an id over 128 chars', bytes({ ...good, id: 'x'.repeat(129) }), 'schema_violation'],
    ['a tag value that is not a string', bytes({ ...good, tags: { team: 7 } }), 'schema_violation'],
    ['a naive local time', bytes({ ...good, timestamp: '2026-11-27T16:10:00' }), 'timestamp_without_zone'],
    ['an impossible date', bytes({ ...good, timestamp: '2026-02-30T16:10:00Z' }), 'invalid_timestamp'],
    ['a time 10 minutes ahead', bytes({ ...good, timestamp: '2026-11-27T17:30:00Z' }), 'future_timestamp'],
    ['a time 2 days back', bytes({ ...good, timestamp: '2026-11-25T16:10:00Z' }), 'too_old'],
    ['a negative quantity', bytes({ ...good, quantity: -1 }), 'negative_quantity'],
    ['a quantity beyond exact range', bytes({ ...good, quantity: 1e16 }), 'quantity_out_of_range'],
    ['an unknown dimension', bytes({ ...good, dimension: 'gpu_hours' }), 'unknown_dimension'],
  ];
  it.each(cases)('rejects %s', (_, value, reason) => {
    const r = decodeJsonEvent(value, ctx);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe(reason);
      expect(r.detail.length).toBeGreaterThan(5);
    }
  });

  it('accepts a timestamp within the allowed clock skew', () => {
    expect(decodeJsonEvent(bytes({ ...good, timestamp: '2026-11-27T17:24:00Z' }), ctx).ok).toBe(true);
  });
});

describe('the published JSON Schema agrees with the validator', () => {
  const schema = JSON.parse(
    readFileSync(new URL('../../../schemas/usage-event.v1.schema.json', import.meta.url), 'utf8'),
  );
  const validate = new Ajv2020({ strict: true, allErrors: true }).compile(schema);
  // Shape-level cases only; time- and plan-dependent checks cannot live in a schema.
  const corpus: unknown[] = [
    good,
    { ...good, timestamp: Date.parse('2026-11-27T16:10:00Z') },
    { ...good, timestamp: '2026-11-27T21:40:00+05:30' },
    { ...good, tags: { 'cost-center': 'eu/1' } },
    { ...good, extra: 'ignored' },
    { ...good, quantity: 0 },
    { ...good, id: '' },
    { ...good, id: 'x'.repeat(129) },
    { ...good, quantity: -0.5 },
    { ...good, quantity: '1' },
    { ...good, timestamp: '2026-11-27T16:10:00' },
    { ...good, timestamp: 'now' },
    { ...good, tags: { a: '1', b: '1', c: '1', d: '1', e: '1', f: '1' } },
    { ...good, tags: { team: '' } },
    { ...good, tags: { team: 7 } },
    { id: 'x' },
    [good],
  ];
  it.each(corpus.map((c, i) => [i, c]))('case %i', (_, event) => {
    const ours = decodeJsonEvent(bytes(event), { ...ctx, nowMs: Date.parse('2026-11-27T17:20:00Z') });
    expect(validate(event)).toBe(ours.ok);
  });
});
