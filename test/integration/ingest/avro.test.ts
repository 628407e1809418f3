/**
 * Avro in the Confluent wire format against the REAL schema registry of the local stack (Apicurio's
 * Confluent-compatible API, SCHEMA_REGISTRY_URL from the global setup). Each test registers under its own
 * subject; the registry's storage is in memory, so nothing outlives it.
 */
import { createServer } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { MeterlineError } from '../../../src/errors.ts';
import {
  type AvroEventInput,
  type AvroRecordSchema,
  createAvroDecoder,
  createAvroEncoder,
  createSchemaRegistry,
  encodeAvroEvent,
  USAGE_EVENT_AVRO_SCHEMA,
} from '../../../src/ingest/avro.ts';
import { EventDecoder } from '../../../src/ingest/decoder.ts';
import type { ValidationContext } from '../../../src/metering/usage-event.ts';
import { uniqueId } from '../../support/harness.ts';

let registryUrl: string;

beforeAll(() => {
  const url = process.env.SCHEMA_REGISTRY_URL;
  if (!url) throw new Error('SCHEMA_REGISTRY_URL must be set (the global setup does it)');
  registryUrl = url;
});

const NOW = Date.now();
const ctx = (): ValidationContext => ({
  nowMs: NOW,
  maxFutureSkewMs: 5 * 60_000,
  submitMarginMs: 60 * 60_000,
  dimensions: new Set(['api_calls', 'storage_gb']),
  maxMessageBytes: 64 * 1024,
});

const hourAgo = NOW - 60 * 60_000;
const events: AvroEventInput[] = [
  { id: 'e-1', customer: 'tenant-a', dimension: 'api_calls', quantity: 3, timestamp: hourAgo },
  {
    id: 'e-2',
    customer: 'tenant-b',
    dimension: 'storage_gb',
    quantity: 0.125,
    timestamp: new Date(hourAgo + 1_234).toISOString(),
    tags: { team: 'blue', env: 'prod' },
  },
  {
    id: 'e-3',
    customer: 'tenant-a',
    dimension: 'api_calls',
    quantity: 1e-6,
    // An explicit offset: the same instant as Z, written as epoch ms in Avro.
    timestamp: new Date(hourAgo + 5_000 + 2 * 3_600_000).toISOString().replace('Z', '+02:00'),
  },
  { id: 'e-4', customer: 'tenant-c', dimension: 'api_calls', quantity: 0, timestamp: hourAgo, tags: {} },
];

/** v1 plus an optional field with a default: a BACKWARD-compatible evolution. */
const V2: AvroRecordSchema = {
  ...USAGE_EVENT_AVRO_SCHEMA,
  fields: [
    ...USAGE_EVENT_AVRO_SCHEMA.fields,
    { name: 'region', type: ['null', 'string'], default: null, doc: 'Where the usage happened.' },
  ],
};

function framed(schemaId: number, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(schemaId, 1);
  return Buffer.concat([header, body]);
}

async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('Avro events through the schema registry', () => {
  it('decodes the same events to identical UsageEvents whether sent as Avro or as JSON', async () => {
    const encoder = createAvroEncoder({ registryUrl, topic: uniqueId('avro-same') });
    const decoder = new EventDecoder(createAvroDecoder({ registryUrl }));
    for (const event of events) {
      const json = decoder.decode(Buffer.from(JSON.stringify(event)), ctx());
      const avroBytes = await encoder.encode(event);
      expect(avroBytes[0]).toBe(0);
      const avro = await decoder.decode(avroBytes, ctx());
      expect(json).toMatchObject({ ok: true });
      expect(avro).toEqual(json);
    }
    // No tags in Avro (null) is no tags in the event, as for JSON without the field.
    const plain = await decoder.decode(await encoder.encode(events[0] as AvroEventInput), ctx());
    expect(plain.ok && 'tags' in plain.event).toBe(false);

    // And the same validation applies after decoding: same reason, whatever the encoding.
    const unknownDim = { ...(events[0] as AvroEventInput), dimension: 'gpu_hours' };
    const fromJson = decoder.decode(Buffer.from(JSON.stringify(unknownDim)), ctx());
    const fromAvro = await decoder.decode(await encoder.encode(unknownDim), ctx());
    expect(fromAvro).toMatchObject({ ok: false, reason: 'unknown_dimension' });
    expect(fromAvro).toEqual(fromJson);
  });

  it('keeps decoding when a producer moves to a backward-compatible v2, and old v1 bytes still decode', async () => {
    const subject = `${uniqueId('avro-evolve')}-value`;
    const v1Producer = createSchemaRegistry({ registryUrl });
    const v2Producer = createSchemaRegistry({ registryUrl });
    const event = events[1] as AvroEventInput;

    const v1Bytes = await encodeAvroEvent(v1Producer, subject, event);
    const decoder = new EventDecoder(createAvroDecoder({ registryUrl }));
    const expected = decoder.decode(Buffer.from(JSON.stringify(event)), ctx());
    expect(await decoder.decode(v1Bytes, ctx())).toEqual(expected);

    const v2Bytes = await encodeAvroEvent(v2Producer, subject, { ...event, region: 'eu-west-1' }, V2);
    const v2Absent = await encodeAvroEvent(v2Producer, subject, event, V2);
    expect(v2Bytes.readUInt32BE(1)).not.toBe(v1Bytes.readUInt32BE(1));
    expect(v2Absent.readUInt32BE(1)).toBe(v2Bytes.readUInt32BE(1));

    // The processor keeps working on v2 (the extra field is ignored), with its cache warm or cold…
    for (const d of [decoder, new EventDecoder(createAvroDecoder({ registryUrl }))]) {
      expect(await d.decode(v2Bytes, ctx())).toEqual(expected);
      expect(await d.decode(v2Absent, ctx())).toEqual(expected);
      // …and v1 bytes already on the topic still decode, with their own schema.
      expect(await d.decode(v1Bytes, ctx())).toEqual(expected);
    }
    // The v2 field reaches the raw decoded object, absent when null.
    const avro = createAvroDecoder({ registryUrl });
    expect(await avro.decode(v2Bytes)).toMatchObject({ region: 'eu-west-1' });
    expect(await avro.decode(v2Absent)).not.toHaveProperty('region');

    // The registry enforces BACKWARD: a new required field without a default is refused (not "unavailable").
    const v3: AvroRecordSchema = {
      ...USAGE_EVENT_AVRO_SCHEMA,
      fields: [...V2.fields, { name: 'plan', type: 'string' }],
    };
    const refused = await encodeAvroEvent(v2Producer, subject, { ...event, plan: 'gold' }, v3).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(Error);
    expect((refused as { code?: string }).code).not.toBe('registry_unavailable');
    expect(String(refused)).toMatch(/409|incompatib/i);
  });

  it('dead-letters an unknown schema id as unknown_schema and a garbage body as undecodable', async () => {
    const encoder = createAvroEncoder({ registryUrl, topic: uniqueId('avro-bad') });
    const good = await encoder.encode(events[0] as AvroEventInput);
    const knownId = good.readUInt32BE(1);
    const decoder = new EventDecoder(createAvroDecoder({ registryUrl }));

    const unknown = await decoder.decode(framed(2_000_000_000, good.subarray(5)), ctx());
    expect(unknown).toMatchObject({ ok: false, reason: 'unknown_schema' });
    if (!unknown.ok) expect(unknown.detail).toContain('2000000000');

    for (const body of [
      Buffer.from([0xff, 0xff, 0xff]), // a varint that never ends
      Buffer.from('garbage, not Avro'),
      Buffer.concat([good.subarray(5), Buffer.from([0])]), // trailing data
    ]) {
      const result = await decoder.decode(framed(knownId, body), ctx());
      expect(result).toMatchObject({ ok: false, reason: 'undecodable' });
    }
    // The good message still decodes with the same (cached) schema.
    expect(await decoder.decode(good, ctx())).toMatchObject({ ok: true });
  });

  it('treats an unreachable or misaddressed registry as a retriable error, not a DLQ reason', async () => {
    const encoder = createAvroEncoder({ registryUrl, topic: uniqueId('avro-down') });
    const message = await encoder.encode(events[0] as AvroEventInput);
    const port = await unusedPort();
    const targets = [
      `http://127.0.0.1:${port}/apis/ccompat/v7`, // connection refused
      registryUrl.replace('/apis/ccompat/v7', '/apis/nowhere'), // a 404 that is not "schema not found"
    ];
    for (const url of targets) {
      const decoder = new EventDecoder(createAvroDecoder({ registryUrl: url, timeoutMs: 2_000 }));
      const error = await Promise.resolve(decoder.decode(message, ctx())).then(
        (result) => result,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(MeterlineError);
      expect(error).toMatchObject({ code: 'registry_unavailable', retriable: true });
    }
    // A producer sees the same retriable error.
    const offline = createAvroEncoder({ registryUrl: targets[0] as string, topic: uniqueId('avro-down') });
    await expect(offline.encode(events[0] as AvroEventInput)).rejects.toMatchObject({
      code: 'registry_unavailable',
      retriable: true,
    });
  });
});
