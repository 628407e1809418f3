/**
 * The metering plan: which product is metered, and how each dimension is aggregated. Its JSON Schema in
 * schemas/ is generated from this zod schema (test/config/schemas.test.ts keeps the two in step).
 */
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { issueLines, readStructuredFile } from './load-file.ts';

export const DimensionSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9_.:-]+$/, 'dimension name may use letters, digits, _ . : - only'),
    model: z.literal('hourly').default('hourly').describe('metering model'),
    aggregation: z.enum(['sum', 'max']).default('sum').describe('how events in one hour combine'),
    description: z.string().max(500).optional(),
  })
  .strict();

export const PlanSchema = z
  .object({
    $schema: z.string().optional(),
    productCode: z.string().min(1).max(255).describe('AWS Marketplace product code'),
    dimensions: z.array(DimensionSchema).min(1, 'a plan needs at least one dimension'),
  })
  .strict()
  .superRefine((plan, ctx) => {
    const seen = new Set<string>();
    plan.dimensions.forEach((d, i) => {
      if (seen.has(d.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['dimensions', i, 'name'],
          message: `duplicate dimension "${d.name}"`,
        });
      }
      seen.add(d.name);
    });
  });

export type Plan = z.infer<typeof PlanSchema>;
export type Dimension = z.infer<typeof DimensionSchema>;

/** Duplicate dimension names, checked on the raw input so they are listed beside any other mistake. */
function duplicateDimensions(raw: unknown): string[] {
  const dims = (raw as { dimensions?: unknown })?.dimensions;
  if (!Array.isArray(dims)) return [];
  const seen = new Set<string>();
  const issues: string[] = [];
  dims.forEach((d, i) => {
    const name = (d as { name?: unknown })?.name;
    if (typeof name !== 'string') return;
    if (seen.has(name)) issues.push(`dimensions.${i}.name: duplicate dimension "${name}"`);
    seen.add(name);
  });
  return issues;
}

export function parsePlan(raw: unknown, source = 'metering plan'): Plan {
  const result = PlanSchema.safeParse(raw);
  const issues = [...(result.success ? [] : issueLines(result.error.issues)), ...duplicateDimensions(raw)];
  if (issues.length || !result.success) throw new ConfigError(source, issues);
  return result.data;
}

export function loadPlan(path: string): Plan {
  return parsePlan(
    readStructuredFile(path, `metering plan (METERLINE_PLAN=${path})`),
    `metering plan ${path}`,
  );
}
