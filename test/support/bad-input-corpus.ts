/**
 * A corpus of bad usage messages, one per kind, each with the reason code it must be dead-lettered with.
 * Timestamps are relative to `nowMs` so the corpus stays valid on any day.
 */
export interface BadInput {
  kind: string;
  value: Buffer | string | null;
  reason: string;
}

export function badInputCorpus(nowMs: number): BadInput[] {
  const ok = {
    id: 'x',
    customer: 'acme',
    dimension: 'api_calls',
    quantity: 1,
    timestamp: new Date(nowMs - 7_200_000).toISOString(),
  };
  const j = (patch: Record<string, unknown>) => JSON.stringify({ ...ok, ...patch });
  const without = (field: string) => {
    const copy: Record<string, unknown> = { ...ok };
    delete copy[field];
    return JSON.stringify(copy);
  };
  return [
    { kind: 'tombstone', value: null, reason: 'tombstone' },
    { kind: 'empty value', value: Buffer.alloc(0), reason: 'empty_message' },
    { kind: 'truncated JSON', value: '{"id": "x", "customer": ', reason: 'malformed_json' },
    { kind: 'plain text', value: 'api_calls=3 acme', reason: 'malformed_json' },
    { kind: 'trailing garbage', value: `${j({})}}`, reason: 'malformed_json' },
    { kind: 'invalid UTF-8 bytes', value: Buffer.from([0xff, 0xfe, 0x7b, 0x22]), reason: 'malformed_json' },
    { kind: 'NaN literal', value: j({}).replace('"quantity":1', '"quantity":NaN'), reason: 'malformed_json' },
    { kind: 'JSON array', value: `[${j({})}]`, reason: 'schema_violation' },
    { kind: 'JSON string', value: '"hello"', reason: 'schema_violation' },
    { kind: 'JSON number', value: '42', reason: 'schema_violation' },
    { kind: 'JSON null', value: 'null', reason: 'schema_violation' },
    { kind: 'missing id', value: without('id'), reason: 'schema_violation' },
    { kind: 'missing customer', value: without('customer'), reason: 'schema_violation' },
    { kind: 'missing dimension', value: without('dimension'), reason: 'schema_violation' },
    { kind: 'missing quantity', value: without('quantity'), reason: 'schema_violation' },
    { kind: 'missing timestamp', value: without('timestamp'), reason: 'schema_violation' },
    { kind: 'empty id', value: j({ id: '' }), reason: 'schema_violation' },
    { kind: 'id over 128 chars', value: j({ id: 'i'.repeat(129) }), reason: 'schema_violation' },
    { kind: 'numeric id', value: j({ id: 7 }), reason: 'schema_violation' },
    { kind: 'id with a newline', value: j({ id: 'a\nb' }), reason: 'schema_violation' },
    {
      kind: 'customer with a control character',
      value: j({ customer: 'ac\u001fme' }),
      reason: 'schema_violation',
    },
    { kind: 'customer over 128 chars', value: j({ customer: 'c'.repeat(129) }), reason: 'schema_violation' },
    { kind: 'numeric dimension', value: j({ dimension: 3 }), reason: 'schema_violation' },
    { kind: 'quantity as string', value: j({ quantity: '3' }), reason: 'schema_violation' },
    { kind: 'quantity "NaN" string', value: j({ quantity: 'NaN' }), reason: 'schema_violation' },
    {
      kind: 'quantity overflowing to Infinity',
      value: j({}).replace('"quantity":1', '"quantity":1e400'),
      reason: 'schema_violation',
    },
    { kind: 'quantity null', value: j({ quantity: null }), reason: 'schema_violation' },
    { kind: 'tags as a string', value: j({ tags: 'team=blue' }), reason: 'schema_violation' },
    { kind: 'negative quantity', value: j({ quantity: -2 }), reason: 'negative_quantity' },
    { kind: 'quantity beyond exact range', value: j({ quantity: 1e15 }), reason: 'quantity_out_of_range' },
    {
      kind: 'naive local time',
      value: j({ timestamp: '2026-11-27T10:00:00' }),
      reason: 'timestamp_without_zone',
    },
    { kind: 'date without time', value: j({ timestamp: '2026-11-27' }), reason: 'timestamp_without_zone' },
    { kind: 'unparseable time', value: j({ timestamp: 'yesterday noon' }), reason: 'invalid_timestamp' },
    { kind: 'February 30th', value: j({ timestamp: '2026-02-30T10:00:00Z' }), reason: 'invalid_timestamp' },
    { kind: 'epoch seconds', value: j({ timestamp: Math.floor(nowMs / 1000) }), reason: 'invalid_timestamp' },
    { kind: 'timestamp as boolean', value: j({ timestamp: true }), reason: 'invalid_timestamp' },
    {
      kind: 'an hour in the future (clock drift)',
      value: j({ timestamp: nowMs + 3_600_000 }),
      reason: 'future_timestamp',
    },
    { kind: 'three days old', value: j({ timestamp: nowMs - 3 * 86_400_000 }), reason: 'too_old' },
    { kind: 'unknown dimension', value: j({ dimension: 'gpu_hours' }), reason: 'unknown_dimension' },
    { kind: 'oversized message', value: j({ padding: 'p'.repeat(20_000) }), reason: 'message_too_large' },
    {
      kind: 'Avro frame, no registry',
      value: Buffer.from([0, 0, 0, 0, 42, 2, 4, 6, 8]),
      reason: 'unknown_schema',
    },
  ];
}
