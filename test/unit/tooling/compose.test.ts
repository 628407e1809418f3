/**
 * deploy/compose.yaml tells the truth: it is a valid Compose file (the Compose specification's JSON schema,
 * as bundled by the dclint package, schemas/compose.schema.json), and it runs the local stack's services at
 * the stack's versions.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SERVICE_NAMES } from '../../../deploy/stack/index.ts';
import { KAFKA_VERSION } from '../../../deploy/stack/kafka.ts';
import { APICURIO_VERSION } from '../../../deploy/stack/registry.ts';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const schemaFile = path.join(
  path.dirname(fileURLToPath(import.meta.resolve('dclint/package.json'))),
  'schemas/compose.schema.json',
);

interface ComposeFile {
  services: Record<string, { image?: string; build?: unknown }>;
}

function validator() {
  const schema = JSON.parse(readFileSync(schemaFile, 'utf8')) as { title: string; $schema?: string };
  // Draft-07 (Ajv's default), named by an https URL that Ajv does not know.
  expect(schema.$schema).toBe('https://json-schema.org/draft-07/schema');
  delete schema.$schema;
  // The schema's own `format`s (durations, ...) are not standard ones: checked by shape only.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  return { title: schema.title, validate: ajv.compile(schema) };
}

const compose = parse(readFileSync(path.join(ROOT, 'deploy/compose.yaml'), 'utf8')) as ComposeFile;

describe('deploy/compose.yaml', () => {
  it('is valid against the Compose specification schema', () => {
    const { title, validate } = validator();
    expect(title).toBe('Compose Specification');
    validate(compose);
    expect(validate.errors ?? []).toEqual([]);
  });

  it('is refused by the schema when a service has a misspelt key', () => {
    const { validate } = validator();
    const broken = structuredClone(compose);
    (broken.services.redis as Record<string, unknown>).comand = ['redis-server'];
    expect(validate(broken)).toBe(false);
    expect(validate.errors?.map((e) => e.params)).toContainEqual({ additionalProperty: 'comand' });
  });

  it("runs the stack's services", () => {
    // All but the 3-node Redis Cluster, which only the cluster crash test starts.
    expect(Object.keys(compose.services).sort()).toEqual(
      SERVICE_NAMES.filter((n) => n !== 'redis-cluster').sort(),
    );
  });

  it("runs the stack's versions", () => {
    const images = Object.fromEntries(
      Object.entries(compose.services).map(([name, svc]) => [name, svc.image ?? '(built)']),
    );
    const jaeger = /latestVersion=v(2\.\d+\.\d+)/.exec(
      readFileSync(path.join(ROOT, 'deploy/tools/tools.ts'), 'utf8'),
    )?.[1];
    expect(images).toEqual({
      kafka: `apache/kafka:${KAFKA_VERSION}`,
      // The stack runs Debian's redis-server 7.0.
      redis: expect.stringMatching(/^redis:7\.0(\.\d+)?$/),
      registry: `apicurio/apicurio-registry:${APICURIO_VERSION}`,
      jaeger: `jaegertracing/jaeger:${jaeger}`,
      emulator: '(built)',
    });
  });
});
