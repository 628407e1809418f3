/** Writes the JSON Schemas of the metering plan and customers file from their zod definitions. */
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { CustomersSchema } from '../src/config/customers.ts';
import { PlanSchema } from '../src/config/plan.ts';

export function generatedSchemas(): Record<string, unknown> {
  return {
    'metering-plan.schema.json': {
      $id: 'https://meterline.dev/schemas/metering-plan.schema.json',
      title: 'meterline metering plan',
      ...z.toJSONSchema(PlanSchema, { io: 'input', unrepresentable: 'any' }),
    },
    'customers.schema.json': {
      $id: 'https://meterline.dev/schemas/customers.schema.json',
      title: 'meterline customers file: tenant id → AWS identity',
      ...z.toJSONSchema(CustomersSchema, { io: 'input', unrepresentable: 'any' }),
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const [name, schema] of Object.entries(generatedSchemas())) {
    writeFileSync(new URL(`../schemas/${name}`, import.meta.url), `${JSON.stringify(schema, null, 2)}\n`);
    process.stdout.write(`wrote schemas/${name}\n`);
  }
}
