/**
 * The in-memory dedupe index of one partition: per event hour, a set of 128-bit event id hashes in a
 * typed-array open-addressing table (linear probing, backward-shift deletion), so millions of ids cost
 * 16 bytes each plus slack and no JS string survives the batch. Redis keeps the same hashes as packed
 * 16-byte hashes, one list entry per batch and hour (applyBatch.lua), which is what the index is restored from.
 *
 * The hash is MurmurHash3 x86_128 of the id's UTF-16 code units with seed 0. It is part of the stored
 * format: changing it makes every stored hash unreadable as a dedupe key (bump the log key's version).
 */

/** Bytes of one stored id hash. */
export const ID_HASH_BYTES = 16;

const MIN_SLOTS = 1024;

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** Reads 32 bits of `s` from code unit `i`: two UTF-16 code units, little-endian. */
const word = (s: string, i: number) => (s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16)) >>> 0;

/** MurmurHash3 x86_128 of `s`'s UTF-16 code units into `out[o..o+3]`. */
export function hashId(s: string, out: Uint32Array, o = 0): void {
  const c1 = 0x239b961b;
  const c2 = 0xab0e9789;
  const c3 = 0x38b34ae5;
  const c4 = 0xa1e38b93;
  const len = s.length * 2;
  let h1 = 0;
  let h2 = 0;
  let h3 = 0;
  let h4 = 0;
  const blocks = len >>> 4;
  for (let b = 0; b < blocks; b++) {
    const i = b * 8;
    let k1 = word(s, i);
    let k2 = word(s, i + 2);
    let k3 = word(s, i + 4);
    let k4 = word(s, i + 6);
    k1 = Math.imul(k1, c1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
    h1 = (h1 << 19) | (h1 >>> 13);
    h1 = (h1 + h2) | 0;
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(k2, c2);
    k2 = (k2 << 16) | (k2 >>> 16);
    k2 = Math.imul(k2, c3);
    h2 ^= k2;
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (h2 + h3) | 0;
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(k3, c3);
    k3 = (k3 << 17) | (k3 >>> 15);
    k3 = Math.imul(k3, c4);
    h3 ^= k3;
    h3 = (h3 << 15) | (h3 >>> 17);
    h3 = (h3 + h4) | 0;
    h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(k4, c4);
    k4 = (k4 << 18) | (k4 >>> 14);
    k4 = Math.imul(k4, c1);
    h4 ^= k4;
    h4 = (h4 << 13) | (h4 >>> 19);
    h4 = (h4 + h1) | 0;
    h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
  }
  // The tail: up to 7 code units (14 bytes), little-endian into k1..k4.
  let k1 = 0;
  let k2 = 0;
  let k3 = 0;
  let k4 = 0;
  const tail = blocks * 8;
  const rest = s.length - tail;
  const tailBytes = rest * 2;
  if (rest > 6) k4 = s.charCodeAt(tail + 6);
  if (rest > 5) k3 = s.charCodeAt(tail + 4) | (s.charCodeAt(tail + 5) << 16);
  else if (rest > 4) k3 = s.charCodeAt(tail + 4);
  if (rest > 3) k2 = s.charCodeAt(tail + 2) | (s.charCodeAt(tail + 3) << 16);
  else if (rest > 2) k2 = s.charCodeAt(tail + 2);
  if (rest > 1) k1 = s.charCodeAt(tail) | (s.charCodeAt(tail + 1) << 16);
  else if (rest > 0) k1 = s.charCodeAt(tail);
  if (tailBytes > 12) {
    k4 = Math.imul(k4, c4);
    k4 = (k4 << 18) | (k4 >>> 14);
    k4 = Math.imul(k4, c1);
    h4 ^= k4;
  }
  if (tailBytes > 8) {
    k3 = Math.imul(k3, c3);
    k3 = (k3 << 17) | (k3 >>> 15);
    k3 = Math.imul(k3, c4);
    h3 ^= k3;
  }
  if (tailBytes > 4) {
    k2 = Math.imul(k2, c2);
    k2 = (k2 << 16) | (k2 >>> 16);
    k2 = Math.imul(k2, c3);
    h2 ^= k2;
  }
  if (tailBytes > 0) {
    k1 = Math.imul(k1, c1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
  }
  h1 ^= len;
  h2 ^= len;
  h3 ^= len;
  h4 ^= len;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix32(h1);
  h2 = fmix32(h2);
  h3 = fmix32(h3);
  h4 = fmix32(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  out[o] = h1;
  out[o + 1] = h2;
  out[o + 2] = h3;
  out[o + 3] = h4;
}

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
}

/** One hour's ids: the set, the entries of its Redis log it reflects, and when it was last written. */
interface HourIds {
  set: HashSet128;
  logEntries: number;
  writtenAtMs: number;
}

/**
 * The index of one partition, for one claim (its fencing token). `synced` is false once a batch may have
 * landed in Redis without the index knowing (a failed or lost reply): it is caught up from the logs first.
 */
export class PartitionDedupe {
  readonly token: string;
  synced = false;
  readonly #hours = new Map<number, HourIds>();

  constructor(token: string) {
    this.token = token;
  }

  hour(hourMs: number): HourIds {
    let h = this.#hours.get(hourMs);
    if (!h) {
      h = { set: new HashSet128(), logEntries: 0, writtenAtMs: 0 };
      this.#hours.set(hourMs, h);
    }
    return h;
  }

  hours(): IterableIterator<[number, HourIds]> {
    return this.#hours.entries();
  }

  /** Loads log entries (packed hashes) read from an hour's log, the first of them at entry `from`. */
  load(hourMs: number, from: number, entries: readonly Buffer[], writtenAtMs: number): void {
    const h = this.hour(hourMs);
    if (from === 0 && h.logEntries !== 0) {
      let bytes = 0;
      for (const e of entries) bytes += e.length;
      h.set = new HashSet128(bytes / ID_HASH_BYTES);
    }
    const words = new Uint32Array(4);
    for (const bytes of entries) {
      const n = Math.floor(bytes.length / ID_HASH_BYTES);
      for (let i = 0; i < n; i++) {
        const at = i * ID_HASH_BYTES;
        words[0] = bytes.readUInt32LE(at);
        words[1] = bytes.readUInt32LE(at + 4);
        words[2] = bytes.readUInt32LE(at + 8);
        words[3] = bytes.readUInt32LE(at + 12);
        h.set.add(words);
      }
    }
    h.logEntries = from + entries.length;
    if (writtenAtMs > h.writtenAtMs) h.writtenAtMs = writtenAtMs;
  }

  /** Forgets an hour (its log expired in Redis). */
  drop(hourMs: number): void {
    this.#hours.delete(hourMs);
  }

  /** Forgets hours not written for `ttlMs`, as Redis expires their logs. */
  expire(nowMs: number, ttlMs: number): void {
    for (const [hourMs, h] of this.#hours) if (h.writtenAtMs + ttlMs < nowMs) this.#hours.delete(hourMs);
  }

  /** Ids held, over all hours. */
  get size(): number {
    let n = 0;
    for (const h of this.#hours.values()) n += h.set.size;
    return n;
  }
}
