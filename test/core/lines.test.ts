import { describe, expect, it } from 'vitest';
import { LineSplitter, type SplitLine } from '../../src/core/lines.js';

function split(chunks: Array<string | Buffer>, max = 1024): SplitLine[] {
  const s = new LineSplitter(max);
  const out: SplitLine[] = [];
  for (const c of chunks) out.push(...s.push(Buffer.isBuffer(c) ? c : Buffer.from(c)));
  out.push(...s.end());
  return out;
}

describe('LineSplitter', () => {
  it.each([
    ['one line', ['a\n'], [['a', 1, 0]]],
    ['no final newline', ['a\nb'], [['a', 1, 0], ['b', 2, 2]]],
    ['CRLF', ['a\r\nb\r\n'], [['a', 1, 0], ['b', 2, 3]]],
    ['empty lines skipped but counted', ['\n\na\n\n'], [['a', 3, 2]]],
    ['BOM dropped', ['\uFEFFa\n'], [['a', 1, 0]]],
    ['line across chunks', ['ab', 'c\nd', 'e\n'], [['abc', 1, 0], ['de', 2, 4]]],
    ['byte offsets with multi-byte text', ['é\nx\n'], [['é', 1, 0], ['x', 2, 3]]],
  ])('%s', (_name, chunks, expected) => {
    expect(split(chunks as string[]).map((l) => [l.text, l.no, l.start])).toEqual(expected);
  });

  it('keeps a character split between chunks at every byte', () => {
    const bytes = Buffer.from('{"s":"a☃𝄞b"}\n{"t":1}\n');
    for (let cut = 1; cut < bytes.length; cut++) {
      const lines = split([bytes.subarray(0, cut), bytes.subarray(cut)]);
      expect(lines.map((l) => l.text)).toEqual(['{"s":"a☃𝄞b"}', '{"t":1}']);
    }
  });

  it('reports an oversized line without keeping it, then goes on', () => {
    const lines = split(['ok\n', 'x'.repeat(50), 'y'.repeat(50), 'z\nnext\n'], 64);
    expect(lines.map((l) => [l.text, l.no, l.tooLong])).toEqual([['ok', 1, 0], ['', 2, 101], ['next', 3, 0]]);
    expect(lines[2]?.start).toBe(3 + 102);
  });

  it('reports an oversized line inside one chunk', () => {
    const lines = split([`a\n${'x'.repeat(100)}\nb\n`], 64);
    expect(lines.map((l) => [l.text, l.tooLong])).toEqual([['a', 0], ['', 100], ['b', 0]]);
  });

  it('reports an oversized unterminated last line', () => {
    const lines = split(['a\n', 'x'.repeat(100)], 64);
    expect(lines.map((l) => [l.text, l.tooLong])).toEqual([['a', 0], ['', 100]]);
  });
});
