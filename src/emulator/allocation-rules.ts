/** AWS's rules for usage allocations (tags), shared by BatchMeterUsage and MeterUsage. */

import { ServiceError } from './service-error.ts';
import type { UsageAllocationInput } from './validate.ts';

const MAX_TAGS = 5;
const TAG_PATTERN = /^[a-zA-Z0-9+ -=._:/@]+$/;

/**
 * Usage allocations: quantities sum to the record's quantity (InvalidUsageAllocationsException), each
 * allocation has a distinct tag set, and tags obey the count/length/pattern rules (InvalidTagException).
 */
export function checkAllocations(allocations: UsageAllocationInput[] | undefined, quantity: number): void {
  if (allocations === undefined) return;
  const sum = allocations.reduce((total, a) => total + a.AllocatedUsageQuantity, 0);
  if (sum !== quantity) {
    throw new ServiceError(
      'InvalidUsageAllocationsException',
      `Sum of allocated usage quantities (${sum}) is not equal to the usage quantity (${quantity})`,
    );
  }
  const tagSets = new Set<string>();
  for (const allocation of allocations) {
    const tags = allocation.Tags ?? [];
    if (allocation.Tags !== undefined && (tags.length === 0 || tags.length > MAX_TAGS)) {
      throw new ServiceError(
        'InvalidTagException',
        `An allocation must have 1 to ${MAX_TAGS} tags, got ${tags.length}`,
      );
    }
    const keys = new Set<string>();
    for (const { Key, Value } of tags) {
      if (Key.length < 1 || Key.length > 100 || !TAG_PATTERN.test(Key)) {
        throw new ServiceError('InvalidTagException', `Invalid tag key '${Key}'`);
      }
      if (Value.length < 1 || Value.length > 256 || !TAG_PATTERN.test(Value)) {
        throw new ServiceError('InvalidTagException', `Invalid value for tag '${Key}'`);
      }
      if (keys.has(Key)) throw new ServiceError('InvalidTagException', `Duplicate tag key '${Key}'`);
      keys.add(Key);
    }
    const setKey = JSON.stringify(
      tags.map((t) => [t.Key, t.Value]).sort(([a = ''], [b = '']) => (a < b ? -1 : a > b ? 1 : 0)),
    );
    if (tagSets.has(setKey)) {
      throw new ServiceError(
        'InvalidUsageAllocationsException',
        'Each usage allocation must have a unique set of tags',
      );
    }
    tagSets.add(setKey);
  }
}
