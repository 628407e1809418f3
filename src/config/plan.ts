/**
 * The metering plan: the products metered, and for each dimension its pricing model, how events in an
 * hour combine, the unit conversion, the rounding, and whether hourly zero records are sent. Its JSON
 * Schema in schemas/ is generated from this zod schema (test/unit/config/config.test.ts keeps them in step).
 *
 * Two forms are accepted: the simple one ({productCode, dimensions}) and the full one ({products}).
 * Both normalise to `Plan`. Events do not name a product, so a dimension name is unique across the plan.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { issueLines, readStructuredFile } from './load-file.ts';

export const MICROS_PER_UNIT = 1_000_000;

export const DimensionSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9_.:-]+$/, 'dimension name may use letters, digits, _ . : - only'),
    model: z
      .enum(['hourly', 'monthly', 'contract'])
      .default('hourly')
      .describe(
        'hourly: each hour billed on its own; monthly: only increases of the calendar-month high-water mark; contract: only usage above the customer entitlement for the contract period',
      ),
    aggregation: z.enum(['sum', 'max']).default('sum').describe('how events in one hour combine'),
    unit: z
      .number()
      .positive()
      .default(1)
      .describe('event quantity per billed unit, e.g. 1073741824 to bill bytes as GiB; at most 6 decimals'),
    rounding: z
      .enum(['floor', 'ceil', 'round'])
      .optional()
      .describe('how a fractional quantity becomes an integer; default floor for sum, ceil for max'),
    zeroRecords: z
      .boolean()
      .default(false)
      .describe('send a record (0 if no usage) every hour for every subscribed customer'),
    description: z.string().max(500).optional(),
  })
  .strict();

export const ProductSchema = z
  .object({
    productCode: z.string().min(1).max(255).describe('AWS Marketplace product code'),
    dimensions: z.array(DimensionSchema).min(1, 'a product needs at least one dimension'),
  })
  .strict();

export const PlanSchema = z
  .object({
    $schema: z.string().optional(),
    productCode: z.string().min(1).max(255).optional().describe('simple form: the one product metered'),
    dimensions: z.array(DimensionSchema).min(1, 'a plan needs at least one dimension').optional(),
    products: z.array(ProductSchema).min(1, 'a plan needs at least one product').optional(),
  })
  .strict();

export type Rounding = 'floor' | 'ceil' | 'round';
export type DimensionInput = z.infer<typeof DimensionSchema>;

export interface Dimension extends Omit<DimensionInput, 'rounding'> {
  rounding: Rounding;
  /** The product this dimension belongs to. */
  productCode: string;
  /** Micro-units of event quantity per billed unit (an exact integer). */
  unitMicros: bigint;
}

export interface Plan {
  products: { productCode: string; dimensions: Dimension[] }[];
  /** Every dimension of every product, by name. */
  dimensions: Map<string, Dimension>;
}

/** Rules that span fields, checked on the raw input so they are listed beside any other mistake. */
function crossChecks(raw: unknown): string[] {
  const issues: string[] = [];
  const r = (raw ?? {}) as { productCode?: unknown; dimensions?: unknown; products?: unknown };
  const simple = r.productCode !== undefined || r.dimensions !== undefined;
  if (simple && r.products !== undefined) {
    issues.push('(root): use either {productCode, dimensions} or {products}, not both');
  } else if (!simple && r.products === undefined) {
    issues.push('(root): a plan needs {productCode, dimensions} or {products}');
  } else if (simple && (r.productCode === undefined || r.dimensions === undefined)) {
    issues.push(
      `${r.productCode === undefined ? 'productCode' : 'dimensions'}: required with the simple form`,
    );
  }
  const lists: [string, unknown][] = simple
    ? [['dimensions', r.dimensions]]
    : Array.isArray(r.products)
      ? r.products.map((p, i) => [`products.${i}.dimensions`, (p as { dimensions?: unknown })?.dimensions])
      : [];
  const seen = new Set<string>();
  const codes = new Set<string>();
  if (Array.isArray(r.products)) {
    r.products.forEach((p, i) => {
      const code = (p as { productCode?: unknown })?.productCode;
      if (typeof code !== 'string') return;
      if (codes.has(code)) issues.push(`products.${i}.productCode: duplicate product "${code}"`);
      codes.add(code);
    });
  }
  for (const [at, dims] of lists) {
    if (!Array.isArray(dims)) continue;
    dims.forEach((d, i) => {
      const dim = (d ?? {}) as Record<string, unknown>;
      const path = `${at}.${i}`;
      if (typeof dim.name === 'string') {
        if (seen.has(dim.name)) issues.push(`${path}.name: duplicate dimension "${dim.name}"`);
        seen.add(dim.name);
      }
      if (dim.model === 'contract' && dim.aggregation === 'max') {
        issues.push(`${path}.aggregation: a contract dimension sums usage over its period; use "sum"`);
      }
      if (typeof dim.unit === 'number' && dim.unit > 0) {
        const micros = dim.unit * MICROS_PER_UNIT;
        if (Math.abs(micros - Math.round(micros)) > 1e-6 * Math.max(1, micros) || micros < 1) {
          issues.push(`${path}.unit: ${dim.unit} has more than 6 decimals`);
        } else if (micros > Number.MAX_SAFE_INTEGER) {
          issues.push(`${path}.unit: ${dim.unit} is too large`);
        }
      }
    });
  }
  return issues;
}

function normalise(input: z.infer<typeof PlanSchema>): Plan {
  const products = input.products ?? [
    { productCode: input.productCode as string, dimensions: input.dimensions ?? [] },
  ];
  const dimensions = new Map<string, Dimension>();
  const out = products.map((p) => ({
    productCode: p.productCode,
    dimensions: p.dimensions.map((d) => {
      const dim: Dimension = {
        ...d,
        rounding: d.rounding ?? (d.aggregation === 'max' ? 'ceil' : 'floor'),
        productCode: p.productCode,
        unitMicros: BigInt(Math.round(d.unit * MICROS_PER_UNIT)),
      };
      dimensions.set(d.name, dim);
      return dim;
    }),
  }));
  return { products: out, dimensions };
}

export function parsePlan(raw: unknown, source = 'metering plan'): Plan {
  const result = PlanSchema.safeParse(raw);
  const issues = [...(result.success ? [] : issueLines(result.error.issues)), ...crossChecks(raw)];
  if (issues.length || !result.success) throw new ConfigError(source, issues);
  return normalise(result.data);
}

export function loadPlan(path: string): Plan {
  return parsePlan(
    readStructuredFile(path, `metering plan (METERLINE_PLAN=${path})`),
    `metering plan ${path}`,
  );
}
