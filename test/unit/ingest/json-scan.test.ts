/**
 * The JSON fast path against the full parser: on any input, decodeJsonEvent must answer exactly as
 * JSON.parse + validateEvent do, and the fast path must take the common shape (or it saves nothing).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeJsonEvent, validateEvent } from '../../../src/ingest/event.ts';
import { internSlot, newScannedEvent, scanEvent } from '../../../src/ingest/json-scan.ts';
import type { DecodeResult, ValidationContext } from '../../../src/metering/usage-event.ts';

const NOW = Date.parse('2026-11-27T17:20:00Z');
const ctx: ValidationContext = {
  nowMs: NOW,
  maxFutureSkewMs: 5 * 60_000,
  submitMarginMs: 60 * 60_000,
  dimensions: new Set(['api_calls', 'storage_gb', 'dim"q', 'é']),
  maxMessageBytes: 4096,
};

/** The reference: the whole message through JSON.parse, then the full validation. */
function reference(value: Buffer): DecodeResult {
  let raw: unknown;
  try {
    raw = JSON.parse(value.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed_json', detail: '' };
  }
  return validateEvent(raw, ctx);
}

/** An accepted event as its readers see it (the fast path's keeps its id in the message's bytes). */
function plain(r: DecodeResult) {
  if (!r.ok) return r;
  const { id, customer, dimension, micros, timestampMs, tags, untagged } = r.event;
  return { ok: true, event: { id, customer, dimension, micros, timestampMs, tags, untagged } };
}

function sameAnswer(value: Buffer): void {
  const ours = decodeJsonEvent(value, ctx);
  const ref = reference(value);
  if (ref.ok) expect(plain(ours)).toEqual(plain(ref));
  else {
    expect(ours.ok).toBe(false);
    // JSON.parse's message differs between the two calls only by nothing: compare reasons.
    if (!ours.ok) expect(ours.reason).toBe(ref.reason);
  }
}

const scan = (text: string) => scanEvent(Buffer.from(text), newScannedEvent(), 128, 255);

const canonical = {
  id: 'b7-000000001',
  customer: 'tenant-a',
  dimension: 'api_calls',
  quantity: 3,
  timestamp: '2026-11-27T16:10:00.123Z',
};

describe('JSON fast path', () => {
  it('reads the common shape without the full parser, in any key order and with whitespace', () => {
    expect(scan(JSON.stringify(canonical))).toBe(true);
    expect(scan(JSON.stringify(canonical, null, 2))).toBe(true);
    const reversed = Object.fromEntries(Object.entries(canonical).reverse());
    expect(scan(` ${JSON.stringify(reversed)}\n`)).toBe(true);
    const out = newScannedEvent();
    const message = Buffer.from(JSON.stringify({ ...canonical, quantity: 2.5e3 }));
    expect(scanEvent(message, out, 128, 255)).toBe(true);
    expect(message.toString('latin1', out.idStart, out.idEnd)).toBe('b7-000000001');
    expect(out).toEqual({
      idStart: 7,
      idEnd: 19,
      customer: 'tenant-a',
      dimension: 'api_calls',
      quantity: 2500,
      timestampMs: Date.parse('2026-11-27T16:10:00.123Z'),
    });
  });

  it('leaves every unusual shape to the full parser', () => {
    const cases = [
      { ...canonical, tags: { team: 'a' } },
      { ...canonical, extra: 1 },
      { ...canonical, id: 'e\\u0041' },
      { ...canonical, id: 'é' },
      { ...canonical, quantity: -1 },
      { ...canonical, timestamp: '2026-11-29T16:10:00Z' },
      { ...canonical, timestamp: '2026-11-27T16:10:00+00:00' },
      { ...canonical, timestamp: Date.parse('2026-11-27T16:10:00Z') },
      { ...canonical, id: 'x'.repeat(129) },
    ];
    for (const c of cases) expect(scan(JSON.stringify(c)), JSON.stringify(c)).toBe(false);
    expect(scan(`${JSON.stringify(canonical).slice(0, -1)},"id":"again"}`)).toBe(false);
    expect(scan(`${JSON.stringify(canonical)}x`)).toBe(false);
    expect(scan(`\ufeff${JSON.stringify(canonical)}`)).toBe(false);
  });

  it('answers as JSON.parse and the full validation do, on hand-picked edges', () => {
    const edges = [
      '{}',
      '[]',
      'null',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":01,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1.,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":.5,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1e,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":0.000001,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":9007199254,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":9007199255,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1234567890123456789,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1E2,"timestamp":"2026-11-27T16:10:00.1Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":0,"timestamp":"2026-11-27T16:10:00.12Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":-0,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00.1234Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:60Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T24:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-13-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T17:30:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-24T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"nope","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z",}',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z"',
      '{"id":"a","customer":"c","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z"} {}',
      '{"id":"a","customer":"c\t","dimension":"api_calls","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"dim\\"q","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a","customer":"c","dimension":"é","quantity":1,"timestamp":"2026-11-27T16:10:00Z"}',
      '{"id":"a" ,"customer" : "c" ,\r\n"dimension":"api_calls",\t"quantity" :1 ,"timestamp":"2026-11-27T16:10:00Z" }',
    ];
    for (const e of edges) sameAnswer(Buffer.from(e));
  });

  it('answers as JSON.parse and the full validation do, on generated messages', () => {
    const text = fc.oneof(
      fc.constantFrom('a', 'tenant-a', 'api_calls', 'storage_gb', 'dim"q', 'é', '', 'x'.repeat(129)),
      fc.string({ maxLength: 12 }),
      fc.string({ unit: 'binary', maxLength: 6 }),
    );
    const digits = (n: number) => fc.stringMatching(new RegExp(`^[0-9]{1,${n}}$`));
    const ts = fc.oneof(
      fc
        .record({
          y: fc.constantFrom('2026', '1999', '3001', '2025'),
          mo: digits(2),
          d: fc.constantFrom('27', '26', '28', '29', '31', '00', '1'),
          h: fc.constantFrom('16', '17', '00', '23', '24'),
          mi: digits(2),
          s: digits(2),
          f: fc.constantFrom('', '.1', '.12', '.123', '.1234', '.', ',5'),
          z: fc.constantFrom('Z', 'z', '', '+00:00', '-01:30'),
          t: fc.constantFrom('T', ' ', 't'),
        })
        .map(
          (p) =>
            `${p.y}-${p.mo.padStart(2, '0')}-${p.d}${p.t}${p.h}:${p.mi.padStart(2, '0')}:${p.s.padStart(2, '0')}${p.f}${p.z}`,
        ),
      fc.string({ maxLength: 24 }),
    );
    const value = (key: string) =>
      key === 'quantity'
        ? fc.oneof(
            fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)),
            fc.oneof(fc.integer({ min: -5, max: 1000 }), fc.maxSafeNat()).map(String),
            fc.constantFrom(
              '1e3',
              '1E-2',
              '0.5',
              '00',
              '-0',
              '1.',
              '"1"',
              'true',
              'null',
              '1e400',
              '12345678901234567',
            ),
          )
        : key === 'timestamp'
          ? fc.oneof(
              ts.map((t) => JSON.stringify(t)),
              fc.constantFrom(String(Date.parse('2026-11-27T16:10:00Z')), '1.5', 'null'),
            )
          : fc.oneof(
              text.map((t) => JSON.stringify(t)),
              fc.constantFrom('1', 'null', '{}', '["a"]', '"\\u0041b"'),
            );
    const keys = fc.shuffledSubarray(
      ['id', 'customer', 'dimension', 'quantity', 'timestamp', 'tags', 'other', 'id'],
      {
        minLength: 4,
      },
    );
    const space = fc.constantFrom('', '', '', ' ', '\n', '\t ', '\u00a0');
    const message = keys.chain((ks) =>
      fc
        .tuple(
          ...ks.map((k) =>
            fc
              .tuple(space, k === 'tags' ? fc.constant('{"team":"a"}') : value(k), space)
              .map(([a, v, b]) => `${a}${JSON.stringify(k)}${b}:${a}${v}${b}`),
          ),
          fc.constantFrom('', '', '', ',', 'x', '}'),
        )
        .map((parts) => `{${parts.slice(0, -1).join(',')}}${parts.at(-1)}`),
    );
    fc.assert(
      fc.property(message, (m) => {
        sameAnswer(Buffer.from(m));
      }),
      { numRuns: 20_000 },
    );
  });
});

describe('interning customer and dimension names', () => {
  it('spreads names that differ only in their digits over the table', () => {
    // The table keeps one string per slot: names that share a first slot evict each other.
    const names = Array.from({ length: 1000 }, (_, i) => `cust-${String(i).padStart(4, '0')}`);
    names.push('api_calls', 'jobs', 'egress_gb', 'compute_min', 'seats');
    const slots = new Set(names.map((n) => internSlot(Buffer.from(n), 0, n.length)));
    expect(slots.size).toBeGreaterThanOrEqual(names.length * 0.95);
    for (const n of ['acme', 'customer-1234567890-eu']) {
      const padded = Buffer.from(`xx${n}yy`);
      expect(internSlot(padded, 2, 2 + n.length)).toBe(internSlot(Buffer.from(n), 0, n.length));
    }
  });
});
