/**
 * The 128-bit hash that stands for an event id in the dedupe state: MurmurHash3 x86_128 of the id's UTF-16
 * code units with seed 0. It is part of the stored format (Redis keeps the hashes, 16 bytes each): changing
 * it makes every stored hash unreadable as a dedupe key (bump the log key's version).
 */

/** Bytes of one stored id hash. */
export const ID_HASH_BYTES = 16;

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** The code units being hashed: ids are short (128 characters at most), so one buffer serves them all. */
let units = new Uint16Array(256);

/** Reads 32 bits from code unit `i`: two UTF-16 code units, little-endian. */
const word = (u: Uint16Array, i: number) => ((u[i] as number) | ((u[i + 1] as number) << 16)) >>> 0;

/** MurmurHash3 x86_128 of `s`'s UTF-16 code units into `out[o..o+3]`. */
export function hashId(s: string, out: Uint32Array, o = 0): void {
  if (s.length > units.length) units = new Uint16Array(s.length);
  for (let i = 0; i < s.length; i++) units[i] = s.charCodeAt(i);
  murmur(units, s.length, out, o);
}

/**
 * `hashId` of the string `buf[start..end)` reads as in Latin-1 (one code unit per byte; ASCII ids read the
 * same in UTF-8), without making the string.
 */
export function hashLatin1Id(buf: Uint8Array, start: number, end: number, out: Uint32Array, o = 0): void {
  const n = end - start;
  if (n > units.length) units = new Uint16Array(n);
  for (let i = 0; i < n; i++) units[i] = buf[start + i] as number;
  murmur(units, n, out, o);
}

/** MurmurHash3 x86_128 of the first `n` code units of `s`. */
function murmur(s: Uint16Array, n: number, out: Uint32Array, o: number): void {
  const c1 = 0x239b961b;
  const c2 = 0xab0e9789;
  const c3 = 0x38b34ae5;
  const c4 = 0xa1e38b93;
  const len = n * 2;
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
  const rest = n - tail;
  const tailBytes = rest * 2;
  if (rest > 6) k4 = s[tail + 6] as number;
  if (rest > 5) k3 = (s[tail + 4] as number) | ((s[tail + 5] as number) << 16);
  else if (rest > 4) k3 = s[tail + 4] as number;
  if (rest > 3) k2 = (s[tail + 2] as number) | ((s[tail + 3] as number) << 16);
  else if (rest > 2) k2 = s[tail + 2] as number;
  if (rest > 1) k1 = (s[tail] as number) | ((s[tail + 1] as number) << 16);
  else if (rest > 0) k1 = s[tail] as number;
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
