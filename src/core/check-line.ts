import { messageOf } from './errors.js';
import type { SplitLine } from './lines.js';
import type { ErrorPolicy } from './policy.js';

/**
 * Checks that a line read by a source is one JSON object; reports it under the error policy when it is
 * not. Returns the line's text when it is good.
 */
export function checkObjectLine(line: SplitLine, policy: ErrorPolicy, maxLineBytes: number): string | undefined {
  if (line.tooLong > 0) {
    policy.report(line.no, `line is ${line.tooLong} bytes, longer than --max-line-bytes ${maxLineBytes}`, '');
    return undefined;
  }
  let value: unknown;
  try {
    value = JSON.parse(line.text);
  } catch (error) {
    policy.report(line.no, `invalid JSON: ${messageOf(error)}`, line.text);
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    policy.report(line.no, `not a JSON object (got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value})`, line.text);
    return undefined;
  }
  return line.text;
}
