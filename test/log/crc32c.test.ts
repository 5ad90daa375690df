import { describe, expect, test } from 'vitest';
import { crc32c } from '../../src/log/crc32c.js';

function bitwise(buf: Uint8Array): number {
  let c = ~0;
  for (const byte of buf) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

describe('crc32c', () => {
  // Check value of the CRC catalogue and the iSCSI vectors of RFC 3720 §B.4.
  test.each([
    ['"123456789"', Buffer.from('123456789'), 0xe3069283],
    ['empty', Buffer.alloc(0), 0],
    ['32 zero bytes', Buffer.alloc(32, 0), 0x8a9136aa],
    ['32 0xff bytes', Buffer.alloc(32, 0xff), 0x62a8ab43],
    ['0..31', Buffer.from(Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e],
    ['31..0', Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c],
  ])('%s', (_name, input, expected) => {
    expect(crc32c(input)).toBe(expected);
  });

  test('a string is checksummed as its UTF-8 bytes', () => {
    expect(crc32c('123456789')).toBe(0xe3069283);
    expect(crc32c('grüße')).toBe(crc32c(Buffer.from('grüße', 'utf8')));
  });

  test('matches a bit-at-a-time reference at every length and alignment up to 70 bytes', () => {
    const data = Buffer.from(Array.from({ length: 80 }, (_, i) => (i * 131 + 7) & 0xff));
    for (let start = 0; start < 9; start++) {
      for (let len = 0; start + len <= 79 && len <= 70; len++) {
        expect(crc32c(data, start, start + len)).toBe(bitwise(data.subarray(start, start + len)));
      }
    }
  });

  test('a seed continues a checksum over consecutive pieces', () => {
    const data = Buffer.from('the quick brown fox jumps over the lazy dog, twice over');
    for (const k of [0, 1, 7, 8, 9, 30, data.length]) {
      expect(crc32c(data, k, data.length, crc32c(data, 0, k))).toBe(crc32c(data));
    }
  });
});
