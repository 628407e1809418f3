/**
 * Usage allocations: a record's quantity split over the tag sets its events carried. AWS requires the
 * allocated quantities to sum to the record's quantity exactly, so the split is by largest remainder in
 * integers. AWS takes at most 2,500 allocations a record; the smallest tag sets beyond that are merged
 * into untagged usage, and the caller warns.
 */
export const MAX_ALLOCATIONS = 2500;

export interface Allocation {
  /** Absent for untagged usage. */
  tags?: Record<string, string>;
  quantity: number;
}

export interface AllocationPart {
  tags?: Record<string, string>;
  micros: bigint;
}

export function allocate(
  quantity: number,
  parts: readonly AllocationPart[],
): { allocations: Allocation[] | undefined; merged: number } {
  if (quantity <= 0 || !parts.some((p) => p.tags)) return { allocations: undefined, merged: 0 };
  // Largest tag sets first; ties by tag text, so the split is the same on every run.
  const key = (p: AllocationPart) => (p.tags ? JSON.stringify(p.tags) : '');
  const sorted = [...parts].sort((a, b) =>
    a.micros === b.micros ? (key(a) < key(b) ? -1 : 1) : a.micros > b.micros ? -1 : 1,
  );
  let untagged = 0n;
  const tagged: AllocationPart[] = [];
  let merged = 0;
  for (const p of sorted) {
    if (!p.tags) untagged += p.micros;
    else if (tagged.length < MAX_ALLOCATIONS - 1) tagged.push(p);
    else {
      untagged += p.micros;
      merged += 1;
    }
  }
  const shares: AllocationPart[] = [...tagged];
  if (untagged > 0n || parts.some((p) => !p.tags) || merged) shares.push({ micros: untagged });
  const total = shares.reduce((s, p) => s + p.micros, 0n);
  const q = BigInt(quantity);
  if (total === 0n) return { allocations: [{ quantity }], merged };
  const base = shares.map((p) => (q * p.micros) / total);
  let left = q - base.reduce((s, v) => s + v, 0n);
  const byRemainder = shares
    .map((p, i) => ({ i, r: (q * p.micros) % total }))
    .sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of byRemainder) {
    if (left === 0n) break;
    base[i] = (base[i] as bigint) + 1n;
    left -= 1n;
  }
  const allocations = shares
    .map((p, i) => ({ ...(p.tags ? { tags: p.tags } : {}), quantity: Number(base[i]) }))
    .filter((a) => a.quantity > 0);
  return { allocations, merged };
}
