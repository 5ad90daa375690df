/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 over eight 256-entry tables. */
const POLY = 0x82f63b78;

function makeTables(): Int32Array[] {
  const t0 = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[i] = c;
  }
  const tables = [t0];
  for (let s = 1; s < 8; s++) {
    const prev = tables[s - 1] as Int32Array;
    const t = new Int32Array(256);
    for (let i = 0; i < 256; i++) {
      const p = prev[i] as number;
      t[i] = (p >>> 8) ^ (t0[p & 0xff] as number);
    }
    tables.push(t);
  }
  return tables;
}

const [T0, T1, T2, T3, T4, T5, T6, T7] = makeTables() as [
  Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array,
];

/**
 * CRC-32C of `buf[start, end)`. Pass a previous result as `seed` to continue a checksum over
 * consecutive pieces: crc32c(b, 0, n) === crc32c(b, k, n, crc32c(b, 0, k)).
 */
export function crc32c(buf: Uint8Array | string, start = 0, end?: number, seed = 0): number {
  const b = typeof buf === 'string' ? Buffer.from(buf, 'utf8') : buf;
  const stop = end ?? b.length;
  let c = ~seed;
  let i = start;
  for (; i + 8 <= stop; i += 8) {
    const lo = ((b[i] as number) | ((b[i + 1] as number) << 8) | ((b[i + 2] as number) << 16) | ((b[i + 3] as number) << 24)) ^ c;
    const hi = (b[i + 4] as number) | ((b[i + 5] as number) << 8) | ((b[i + 6] as number) << 16) | ((b[i + 7] as number) << 24);
    c =
      (T7[lo & 0xff] as number) ^
      (T6[(lo >>> 8) & 0xff] as number) ^
      (T5[(lo >>> 16) & 0xff] as number) ^
      (T4[lo >>> 24] as number) ^
      (T3[hi & 0xff] as number) ^
      (T2[(hi >>> 8) & 0xff] as number) ^
      (T1[(hi >>> 16) & 0xff] as number) ^
      (T0[hi >>> 24] as number);
  }
  for (; i < stop; i++) c = (T0[(c ^ (b[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}
