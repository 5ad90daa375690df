import { describe, expect, it } from 'vitest';
import { accept, advance, compareN, holds, isApplied, minimumPositions, parsePosition, resumeAt, splitStamp, stampJson, stampLine, type PositionMap } from '../../src/core/position.js';

describe('positions', () => {
  it.each([
    ['5', '4', true],
    ['5', '5', true],
    ['5', '6', false],
    ['5.0', '5', true],
    ['5.1', '5.0', true],
    ['5.0', '5.1', false],
    ['5.0.1', '5.0', true],
    ['5.0', '6', false],
    ['15.0', '15', true],
    ['5.0', '50', false],
  ])('a sink at %s holds %s: %s', (last, n, expected) => {
    expect(holds(last, n)).toBe(expected);
    expect(isApplied({ s: last }, { source: 's', n })).toBe(expected);
    const applied: PositionMap = { s: last };
    expect(accept(applied, { source: 's', n })).toBe(!expected);
  });

  it.each([
    ['1', '2', -1],
    ['10', '9', 1],
    ['007', '7', 0],
    ['123456789012345678901234567890', '123456789012345678901234567891', -1],
    ['7.0', '7.1', -1],
    ['7.1', '7', -1],
    ['7', '7.0', 1],
    ['7.1.0', '7.1', -1],
    ['6', '7.0', -1],
  ])('compareN(%s, %s) = %i', (a, b, expected) => {
    expect(compareN(a, b)).toBe(expected);
  });

  it('stamps and splits lines, keeping the text intact', () => {
    const p = { source: 'file:ab12', n: '42' };
    for (const text of ['{"a":1}', '{}', '{"s":"x\\"}"}']) {
      const stamped = stampLine(text, p);
      expect(JSON.parse(stamped)['@cqp']).toBe('file:ab12:42');
      expect(splitStamp(stamped)).toEqual({ text, position: p });
      expect(stampJson(text, p)).toBe(stamped);
    }
    expect(splitStamp('{"a":"b"}')).toEqual({ text: '{"a":"b"}', position: undefined });
  });

  it('parses positions whose source has colons', () => {
    expect(parsePosition('kinesis:s/shardId-0:4955')).toEqual({ source: 'kinesis:s/shardId-0', n: '4955' });
    expect(parsePosition('nope')).toBeUndefined();
  });

  it('takes the smallest position per source, leaving out a source one map lacks', () => {
    const a: PositionMap = { 'file:ab': '10', 'log:x': '7.2', only: '3' };
    const b: PositionMap = { 'file:ab': '9', 'log:x': '7.10' };
    expect(minimumPositions([a, b])).toEqual({ 'file:ab': '9', 'log:x': '7.2' });
    expect(minimumPositions([a])).toEqual(a);
    expect(minimumPositions([])).toEqual({});
  });

  it('tracks what a sink applied', () => {
    const applied: PositionMap = {};
    advance(applied, { source: 'a', n: '5' });
    advance(applied, { source: 'a', n: '3' });
    expect(applied).toEqual({ a: '5' });
    expect(isApplied(applied, { source: 'a', n: '5' })).toBe(true);
    expect(isApplied(applied, { source: 'a', n: '6' })).toBe(false);
    expect(isApplied(applied, { source: 'b', n: '1' })).toBe(false);
  });

  it('resumes after a whole input, at a partly applied one', () => {
    expect(resumeAt('12')).toEqual({ n: '12', inclusive: false });
    expect(resumeAt('12.0')).toEqual({ n: '12', inclusive: true });
  });
});
