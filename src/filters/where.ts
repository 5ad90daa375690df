import * as z from 'zod';
import { KEEP, defineFilter } from '../core/component.js';
import { compileExpression } from '../core/expression.js';

export default defineFilter({
  name: 'where',
  summary: 'keep the events for which a JavaScript expression over `e` is truthy',
  description:
    'Kept events are forwarded as their original bytes (no re-serialisation). An expression that throws ' +
    'for one event follows --on-error.',
  options: z.object({
    expr: z.string().min(1).describe('JavaScript expression over the event `e`, e.g. "e.payload.price > 1"'),
  }),
  positional: 'expr',
  // It only keeps or drops: the kept bytes go out as they came.
  plainNumbers: true,
  examples: [{ expr: 'e.payload.price > 1' }, { expr: "e.header.eventType[0] === 'delete'" }],
  checks: { expr: (expr) => compileExpression(expr, '--expr') },
  create({ expr }) {
    const { fn } = compileExpression(expr, '--expr');
    return { process: (e) => (fn(e) ? KEEP : null) };
  },
});
