/**
 * Avro usage events in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body), through a
 * Confluent-compatible schema registry (`@kafkajs/confluent-schema-registry`; locally Apicurio's
 * `/apis/ccompat/v7`).
 *
 * Decoding uses the WRITER's schema as registered under the message's id (cached by id, so the registry is asked
 * once per schema), and hands a plain object shaped like the JSON event to the same validation as JSON. A
 * producer may therefore move to a newer compatible schema (an optional field with a default, say) without the
 * processor changing: extra fields are ignored, old bytes keep decoding with their own schema.
 *
 * Failures, as the processor needs them:
 * - `unknown_schema`: the registry answered 404 / error code 40403 for the id (dead-letter);
 * - `undecodable`: the body does not decode with that schema, or the schema is not Avro (dead-letter);
 * - `registry_unavailable` (retriable): anything else on the way to the registry (refused, timed out, 5xx,
 *   a 404 that is not 40403, i.e. a wrong URL). The batch fails and is retried: a registry outage or a
 *   misconfiguration never dead-letters good data.
 */
import { readFileSync } from 'node:fs';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { MeterlineError } from '../errors.ts';
import { parseEventTimestamp } from '../time/timestamp.ts';
import type { AvroDecoder } from './decoder.ts';
import { isConfluentFramed } from './decoder.ts';

/** The Avro record of contract v1 (schemas/usage-event.v1.avsc), as registered by producers. */
export type AvroRecordSchema = {
  type: 'record';
  name: string;
  namespace?: string;
  doc?: string;
  fields: { name: string; type: unknown; default?: unknown; doc?: string }[];
};

export const USAGE_EVENT_AVRO_SCHEMA: AvroRecordSchema = JSON.parse(
  readFileSync(new URL('../../schemas/usage-event.v1.avsc', import.meta.url), 'utf8'),
);

/** Confluent's default subject naming (TopicNameStrategy) for message values. */
export function avroSubject(topic: string): string {
  return `${topic}-value`;
}

export interface RegistryClientOptions {
  /** The registry's Confluent-compatible base URL, e.g. `http://127.0.0.1:8080/apis/ccompat/v7`. */
  registryUrl: string;
  /**
   * Socket idle timeout per registry request. A timeout counts as `registry_unavailable`.
   * @defaultValue 5000
   */
  timeoutMs?: number;
}

type RegistryArgs = ConstructorParameters<typeof SchemaRegistry>[0];
type RegistryMiddleware = NonNullable<RegistryArgs['middlewares']>[number];

const timeoutMiddleware =
  (timeoutMs: number): RegistryMiddleware =>
  () => ({
    prepareRequest: (next) => next().then((request) => request.enhance({ timeout: timeoutMs })),
  });

/** A registry client with a request timeout (the library has none by default). */
export function createSchemaRegistry(options: RegistryClientOptions): SchemaRegistry {
  const timeoutMs = options.timeoutMs ?? 5_000;
  if (!(timeoutMs > 0)) throw new RangeError('timeoutMs must be greater than 0');
  return new SchemaRegistry({
    host: options.registryUrl.replace(/\/+$/, ''),
    clientId: 'meterline',
    middlewares: [timeoutMiddleware(timeoutMs)],
  });
}

/** The library's HTTP error (not exported by it): carries the status, and the request as `url`. */
interface RegistryResponseError extends Error {
  status: number;
  url: string;
}

function isResponseError(error: unknown): error is RegistryResponseError {
  return (
    error instanceof Error &&
    typeof (error as Partial<RegistryResponseError>).status === 'number' &&
    typeof (error as Partial<RegistryResponseError>).url === 'string'
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function unavailable(detail: string, cause: unknown, context: Record<string, unknown>): MeterlineError {
  return new MeterlineError('registry_unavailable', `schema registry: ${detail}`, {
    retriable: true,
    cause,
    context,
  });
}

/** Network failures reach us as the library's HTTP error with a made-up status 400 and the errno text. */
const NETWORK_FAILURE =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|socket hang up|Timeout \(/;

function isUnavailable(error: RegistryResponseError): boolean {
  return error.status >= 500 || error.status === 408 || NETWORK_FAILURE.test(error.message);
}

/**
 * A 404 for a schema id means "unknown schema" only when the registry itself says so (error code 40403). The
 * library's error keeps neither the body nor the code, so ask once more, directly: a 404 from a wrong base URL
 * (a proxy, a missing `/apis/ccompat/v7`) must not dead-letter every Avro message.
 */
async function isUnknownSchemaId(registryUrl: string, id: number, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(`${registryUrl.replace(/\/+$/, '')}/schemas/ids/${id}`, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: { accept: 'application/vnd.schemaregistry.v1+json, application/json' },
    });
    if (res.status !== 404) {
      await res.body?.cancel();
      return false;
    }
    const body = (await res.json()) as { error_code?: unknown };
    return body.error_code === 40403;
  } catch {
    return false;
  }
}

/** Avro's `null` for an absent optional field becomes an absent property, as in the JSON contract. */
function toPlainEvent(record: unknown): unknown {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return record;
  // fromEntries defines own keys: a writer's field named `__proto__` cannot become the prototype.
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== null));
}

export interface AvroDecoderOptions extends RegistryClientOptions {
  /** A client to share (its schema cache with it); built from `registryUrl` otherwise. */
  registry?: SchemaRegistry;
}

export function createAvroDecoder(options: AvroDecoderOptions): AvroDecoder {
  const registryUrl = options.registryUrl;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const registry = options.registry ?? createSchemaRegistry(options);

  return {
    async decode(value: Buffer): Promise<unknown> {
      if (!isConfluentFramed(value)) {
        throw new MeterlineError(
          'undecodable',
          'not a Confluent-framed message (magic byte 0, schema id, body)',
        );
      }
      const id = value.readUInt32BE(1);
      try {
        await registry.getSchema(id); // cached by id after the first call
      } catch (error) {
        if (!isResponseError(error)) {
          // The registry answered, but with a schema this library cannot build.
          throw new MeterlineError('undecodable', `schema id ${id} cannot be used: ${messageOf(error)}`, {
            cause: error,
            context: { schemaId: id },
          });
        }
        if (error.status === 404 && (await isUnknownSchemaId(registryUrl, id, timeoutMs))) {
          throw new MeterlineError('unknown_schema', `schema id ${id} is not in the registry`, {
            cause: error,
            context: { schemaId: id },
          });
        }
        throw unavailable(`looking up schema id ${id} at ${registryUrl} failed: ${messageOf(error)}`, error, {
          registryUrl,
          schemaId: id,
        });
      }
      const cached = registry.cache.getSchema(id);
      if (cached?.type !== SchemaType.AVRO) {
        throw new MeterlineError(
          'undecodable',
          `schema id ${id} is a ${cached?.type ?? 'unknown'} schema; only Avro is supported`,
          { context: { schemaId: id } },
        );
      }
      let record: unknown;
      try {
        record = cached.schema.fromBuffer(value.subarray(5));
      } catch (error) {
        throw new MeterlineError(
          'undecodable',
          `the body does not decode with schema id ${id}: ${messageOf(error)}`,
          { cause: error, context: { schemaId: id } },
        );
      }
      return toPlainEvent(record);
    },
  };
}

/** A usage event as a producer writes it (the JSON contract); extra fields go to a newer schema's fields. */
export interface AvroEventInput {
  id: string;
  customer: string;
  dimension: string;
  quantity: number;
  /** ISO-8601 with a zone, or epoch milliseconds; written as epoch milliseconds. */
  timestamp: string | number;
  tags?: Record<string, string> | null;
  [field: string]: unknown;
}

/** The JSON-shaped event as an Avro record value: epoch-ms timestamp, `null` for no tags. */
export function toAvroRecord(event: AvroEventInput): Record<string, unknown> {
  const ts = parseEventTimestamp(event.timestamp);
  if (!ts.ok) {
    throw new MeterlineError(ts.reason, `event ${JSON.stringify(event.id)}: ${ts.detail}`);
  }
  return { ...event, timestamp: ts.ms, tags: event.tags ?? null };
}

/** Registered schema ids per client, subject and schema: producers register once, not per message. */
const registeredIds = new WeakMap<SchemaRegistry, Map<string, Promise<number>>>();

async function registeredId(registry: SchemaRegistry, subject: string, schema: AvroRecordSchema) {
  let bySchema = registeredIds.get(registry);
  if (!bySchema) {
    bySchema = new Map();
    registeredIds.set(registry, bySchema);
  }
  const key = `${subject}\u0000${JSON.stringify(schema)}`;
  let id = bySchema.get(key);
  if (!id) {
    id = registry
      .register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject })
      .then((r) => r.id);
    bySchema.set(key, id);
    id.catch(() => bySchema.delete(key)); // try again next time
  }
  return id;
}

/**
 * Registers `schema` (default: v1) under `subject` (once per client; the registry enforces BACKWARD
 * compatibility) and returns the event in the Confluent wire format. Throws the event's timestamp reason or
 * `schema_violation` when it does not fit the schema, and `registry_unavailable` when the registry cannot be
 * reached; other registry refusals (e.g. 409, an incompatible schema) are rethrown as they are.
 */
export async function encodeAvroEvent(
  registry: SchemaRegistry,
  subject: string,
  event: AvroEventInput,
  schema: AvroRecordSchema = USAGE_EVENT_AVRO_SCHEMA,
): Promise<Buffer> {
  const record = toAvroRecord(event);
  let id: number;
  try {
    id = await registeredId(registry, subject, schema);
  } catch (error) {
    if (isResponseError(error) && isUnavailable(error)) {
      throw unavailable(`registering the schema under ${subject} failed: ${messageOf(error)}`, error, {
        subject,
      });
    }
    throw error;
  }
  try {
    return await registry.encode(id, record);
  } catch (error) {
    throw new MeterlineError(
      'schema_violation',
      `event ${JSON.stringify(event.id)} does not fit schema id ${id}: ${messageOf(error)}`,
      { cause: error, context: { schemaId: id, subject } },
    );
  }
}

export interface AvroEncoder {
  readonly subject: string;
  encode(event: AvroEventInput): Promise<Buffer>;
}

/** An encoder for one topic's value subject (`<topic>-value`), for producers and tests. */
export function createAvroEncoder(
  options: RegistryClientOptions & { topic: string; schema?: AvroRecordSchema; registry?: SchemaRegistry },
): AvroEncoder {
  const registry = options.registry ?? createSchemaRegistry(options);
  const subject = avroSubject(options.topic);
  return {
    subject,
    encode: (event) => encodeAvroEvent(registry, subject, event, options.schema),
  };
}
