import { describe, expect, it } from 'vitest';
import { compileExpression } from '../../src/core/expression.js';

describe('map expression forms, decided at compile time', () => {
  it.each([
    ['e.total = e.qty * e.price', 'mutate'],
    ['e.a += 1', 'mutate'],
    ['delete e.x', 'mutate'],
    ['e.a = 1, delete e.b', 'mutate'],
    ['(e.a = 1)', 'mutate'],
    ['({ id: e.id })', 'value'],
    ['[e, e]', 'value'],
    ['e.a === 1 ? e : null', 'value'],
    ['e.a = 1, e.b', 'value'],
  ])('%s → %s', (expr, form) => {
    expect(compileExpression(expr, '--expr').form).toBe(form);
  });

  it('mutate form returns the changed event', () => {
    const { fn } = compileExpression('e.total = e.qty * e.price', '--expr');
    expect(fn({ qty: 2, price: 3 })).toEqual({ qty: 2, price: 3, total: 6 });
  });

  it.each([['e.a ==', 'cannot parse'], ['e.a; e.b', 'unexpected']])('rejects %s', (expr, message) => {
    expect(() => compileExpression(expr, '--expr')).toThrow(message);
  });
});
