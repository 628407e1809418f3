/**
 * A set of 128-bit id hashes (id-hash.ts) in a typed-array open-addressing table (linear probing,
 * backward-shift deletion): millions of ids cost 16 bytes each plus slack, and no JS string survives.
 */

const MIN_SLOTS = 1024;

/**
 * A set of 128-bit hashes. A slot whose first word is 0 is empty, so a hash whose first word is 0 is
 * stored with it set to 1 (in memory only; the stored bytes keep the hash as computed).
 */
export class HashSet128 {
  #slots: Uint32Array;
  #mask: number;
  #size = 0;

  constructor(expected = 0) {
    let n = MIN_SLOTS;
    while (n * 0.7 < expected) n *= 2;
    this.#slots = new Uint32Array(n * 4);
    this.#mask = n - 1;
  }

  get size(): number {
    return this.#size;
  }

  /** Slots allocated (capacity), for tests and sizing. */
  get capacity(): number {
    return this.#mask + 1;
  }

  /** Finds `h[o..o+3]`: its slot, or -(empty slot + 1) where it would go. */
  #find(h: Uint32Array, o: number): number {
    const t = this.#slots;
    const a = h[o] || 1;
    const b = h[o + 1] as number;
    const c = h[o + 2] as number;
    const d = h[o + 3] as number;
    let i = (b ^ Math.imul(a, 0x9e3779b1)) & this.#mask;
    for (;;) {
      const x = i * 4;
      const w = t[x] as number;
      if (w === 0) return -(i + 1);
      if (w === a && t[x + 1] === b && t[x + 2] === c && t[x + 3] === d) return i;
      i = (i + 1) & this.#mask;
    }
  }

  has(h: Uint32Array, o = 0): boolean {
    return this.#find(h, o) >= 0;
  }

  /** Adds the hash; false when it was there already. */
  add(h: Uint32Array, o = 0): boolean {
    let i = this.#find(h, o);
    if (i >= 0) return false;
    if ((this.#size + 1) * 10 > (this.#mask + 1) * 7) {
      this.#grow();
      i = this.#find(h, o);
    }
    const x = (-i - 1) * 4;
    this.#slots[x] = h[o] || 1;
    this.#slots[x + 1] = h[o + 1] as number;
    this.#slots[x + 2] = h[o + 2] as number;
    this.#slots[x + 3] = h[o + 3] as number;
    this.#size += 1;
    return true;
  }

  /** Removes the hash (backward-shift deletion keeps every probe chain whole); false when absent. */
  delete(h: Uint32Array, o = 0): boolean {
    let i = this.#find(h, o);
    if (i < 0) return false;
    const t = this.#slots;
    const mask = this.#mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const y = j * 4;
      if (t[y] === 0) break;
      const home = ((t[y + 1] as number) ^ Math.imul(t[y] as number, 0x9e3779b1)) & mask;
      // Move the entry at j back to i unless its home lies cyclically in (i, j].
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!between) {
        t.copyWithin(i * 4, y, y + 4);
        i = j;
      }
    }
    t.fill(0, i * 4, i * 4 + 4);
    this.#size -= 1;
    return true;
  }

  #grow(): void {
    const old = this.#slots;
    this.#slots = new Uint32Array(old.length * 2);
    this.#mask = old.length / 2 - 1;
    this.#size = 0;
    for (let x = 0; x < old.length; x += 4) if (old[x] !== 0) this.add(old, x);
  }

  /**
   * The table itself: 4 words per slot, the first 0 in an empty slot. A spill writes the hashes from it and
   * then drops the set, so it needs no copy of them.
   */
  table(): Uint32Array {
    return this.#slots;
  }
}
