import { parseExpressionAt, type Node } from 'acorn';
import { CqpError, messageOf } from './errors.js';

/** The two forms a `map` expression can take, decided once at compile time. */
export type ExpressionForm = 'mutate' | 'value';

interface AcornNode extends Node {
  operator?: string;
  expressions?: AcornNode[];
}

interface Wrapped extends AcornNode {
  expression?: AcornNode;
}

function isMutation(node: AcornNode): boolean {
  if (node.type === 'ParenthesizedExpression') return isMutation((node as Wrapped).expression as AcornNode);
  if (node.type === 'AssignmentExpression') return true;
  if (node.type === 'UnaryExpression' && node.operator === 'delete') return true;
  if (node.type === 'SequenceExpression') return (node.expressions ?? []).every(isMutation);
  return false;
}

/**
 * Compiles a user expression over `e` into a function. Reports syntax errors with the column.
 * `mutate` form (top level is an assignment, a `delete`, or a sequence of those) returns `e`.
 */
export function compileExpression(expr: string, option: string): { form: ExpressionForm; fn: (e: unknown) => unknown } {
  let node: AcornNode;
  try {
    node = parseExpressionAt(expr, 0, { ecmaVersion: 'latest', preserveParens: true }) as AcornNode;
  } catch (error) {
    throw new CqpError('USAGE', `${option}: cannot parse expression ${JSON.stringify(expr)}: ${messageOf(error)}`);
  }
  const rest = expr.slice(node.end).trim();
  if (rest !== '' && rest !== ';') {
    throw new CqpError('USAGE', `${option}: unexpected ${JSON.stringify(rest.slice(0, 20))} after the expression at column ${node.end + 1} (give one expression; join several with commas)`);
  }
  const form: ExpressionForm = isMutation(node) ? 'mutate' : 'value';
  const body = form === 'mutate' ? `${expr.slice(0, node.end)};\nreturn e;` : `return (${expr.slice(0, node.end)});`;
  try {
    return { form, fn: new Function('e', `"use strict";\n${body}`) as (e: unknown) => unknown };
  } catch (error) {
    throw new CqpError('USAGE', `${option}: cannot compile expression ${JSON.stringify(expr)}: ${messageOf(error)}`);
  }
}
