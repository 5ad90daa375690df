import { describe, expect, it } from 'vitest';
import { jsonContains, jsonDiff, jsonEquals, lineDiff, pruneTo } from '../../src/testing/diff.js';

describe('comparing events', () => {
  it.each([
    ['the same fields in another order', { a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }, true],
    ['a number against its string', { n: 1 }, { n: '1' }, false],
    ['a field more', { a: 1, b: 2 }, { a: 1 }, false],
  ])('json_equals: %s', (_what, actual, expected, equal) => {
    expect(jsonEquals(actual, expected)).toBe(equal);
  });

  it.each([
    ['nested fields it names', { h: { id: 'x', t: 1 }, p: {} }, { h: { id: 'x' } }, true],
    ['a field it lacks', { h: {} }, { h: { id: 'x' } }, false],
    ['arrays item by item', { l: [{ a: 1, b: 2 }] }, { l: [{ a: 1 }] }, true],
    ['an array of another length', { l: [1, 2] }, { l: [1] }, false],
    ['null against a missing field', { a: 1 }, { b: null }, false],
  ])('json_contains: %s', (_what, actual, expected, holds) => {
    expect(jsonContains(actual, expected)).toBe(holds);
  });

  it('prunes an event to the fields a condition names', () => {
    expect(pruneTo({ h: { id: 'x', t: 1 }, p: { q: 2 } }, { h: { id: 'y' }, z: 1 })).toEqual({ h: { id: 'x' } });
  });
});

describe('diffs', () => {
  it.each([
    ['equal', ['a', 'b'], ['a', 'b'], ['  a', '  b']],
    ['a changed line: expected first', ['a', 'b', 'c'], ['a', 'x', 'c'], ['  a', '- b', '+ x', '  c']],
    ['lines added', [], ['x', 'y'], ['+ x', '+ y']],
    ['lines removed', ['x', 'y'], [], ['- x', '- y']],
  ])('%s', (_what, expected, actual, diff) => {
    expect(lineDiff(expected, actual)).toEqual(diff);
  });

  it('shows two events one field a line, keys sorted', () => {
    expect(jsonDiff({ b: 1, a: 2 }, { a: 2, b: 3 })).toEqual(['- expected', '+ actual', '  {', '    "a": 2,', '-   "b": 1', '+   "b": 3', '  }']);
  });
});
