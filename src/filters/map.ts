import * as z from 'zod';
import { defineFilter, type JsonObject } from '../core/component.js';
import { compileExpression } from '../core/expression.js';

export default defineFilter({
  name: 'map',
  summary: 'transform each event with a JavaScript expression over `e`',
  description:
    'When the top level of the expression is an assignment (=, +=, …), a `delete`, or a comma sequence of ' +
    'those, the changed `e` goes on ("e.total = e.qty * e.price"). Otherwise the value is the output: an ' +
    'object is one event ("({id: e.header.rel.id})"), an array several, null or undefined drops the event. ' +
    'A number a double cannot carry (9007199254740993, 1e400, -0) is a LosslessNumber that keeps its text ' +
    '(String(e.x)) and computes as Number(e.x); a NaN or Infinity the expression computes is written as null.',
  options: z.object({
    expr: z.string().min(1).describe('JavaScript expression over the event `e`'),
  }),
  positional: 'expr',
  examples: [{ expr: 'e.total = e.qty * e.price' }, { expr: '({ id: e.header.rel.id })' }, { expr: 'delete e.payload.description' }],
  checks: { expr: (expr) => compileExpression(expr, '--expr') },
  create({ expr }) {
    const { fn } = compileExpression(expr, '--expr');
    return { process: (e) => fn(e) as JsonObject | JsonObject[] | null | undefined };
  },
});
