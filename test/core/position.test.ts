import { describe, expect, it } from 'vitest';
import { accept, advance, checkParts, compareN, hasParts, holds, isApplied, minimumPositions, parsePosition, resumeAt, splitStamp, stampJson, stampLine, type PositionMap } from '../../src/core/position.js';

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

  it('places an event of a whole source among positions kept per part of it, or refuses it', () => {
    // A group kept partitions p0 and p1 of log:L; an earlier reader of the whole log stood at 10.
    const applied: PositionMap = { 'log:L': '10', 'log:L/p0': '40', 'log:L/p1': '25', 'log:L2/p0': '900', other: '7' };
    expect(hasParts(applied, 'log:L')).toBe(true);
    expect(hasParts(applied, 'log:L/p0')).toBe(false);
    expect(hasParts(applied, 'other')).toBe(false);
    // Held by the whole source's own position.
    expect(isApplied(applied, { source: 'log:L', n: '10' })).toBe(true);
    // Past every part: new for sure (log:L2 is another log, not a part).
    expect(isApplied(applied, { source: 'log:L', n: '41' })).toBe(false);
    // Between: some part holds a position at or past it, its own part unknown.
    for (const n of ['11', '25', '40', '40.1']) {
      expect(() => isApplied(applied, { source: 'log:L', n })).toThrow(/log:L read whole, but the positions kept are per part of it \(log:L\/p0 up to 40.*`group: NAME`.*`cqp replay`/);
      expect(() => accept({ ...applied }, { source: 'log:L', n })).toThrow(/per part of it/);
    }
    const copy = { ...applied };
    expect(accept(copy, { source: 'log:L', n: '41' })).toBe(true);
    expect(copy['log:L']).toBe('41');
    // A part's own events are placed by the part's position alone.
    expect(isApplied(applied, { source: 'log:L/p1', n: '30' })).toBe(false);
    expect(isApplied(applied, { source: 'log:L/p1', n: '25' })).toBe(true);
    expect(() => checkParts(applied, { source: 'log:L', n: '0' })).toThrow(/per part of it/);
    expect(() => checkParts({ 'log:L/p0': '5' }, { source: 'log:L', n: '6' })).not.toThrow();
  });

  it('resumes after a whole input, at a partly applied one', () => {
    expect(resumeAt('12')).toEqual({ n: '12', inclusive: false });
    expect(resumeAt('12.0')).toEqual({ n: '12', inclusive: true });
  });
});
