/**
 * Splits records into BatchMeterUsage calls: at most 25 records and under 1 MB per call, and one group
 * key (product, customer identifier form) per call.
 */
export const MAX_RECORDS_PER_CALL = 25;
export const MAX_CALL_BYTES = 1_000_000;

export function chunkForBatchMeterUsage<T>(
  records: readonly T[],
  groupKey: (record: T) => string,
  sizeOf: (record: T) => number = (r) => JSON.stringify(r).length,
): T[][] {
  const byProduct = new Map<string, T[]>();
  for (const r of records) {
    const key = groupKey(r);
    const list = byProduct.get(key);
    if (list) list.push(r);
    else byProduct.set(key, [r]);
  }
  const calls: T[][] = [];
  for (const list of byProduct.values()) {
    let current: T[] = [];
    let bytes = 0;
    for (const r of list) {
      const size = sizeOf(r);
      if (
        current.length === MAX_RECORDS_PER_CALL ||
        (current.length && bytes + size > MAX_CALL_BYTES * 0.9)
      ) {
        calls.push(current);
        current = [];
        bytes = 0;
      }
      current.push(r);
      bytes += size;
    }
    if (current.length) calls.push(current);
  }
  return calls;
}
