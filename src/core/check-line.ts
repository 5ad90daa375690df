import type { JsonObject } from './component.js';
import { messageOf } from './errors.js';
import { NESTING_MESSAGE, nestsDeeperThan, parseJson, scanJson, SCAN_PLAIN, SCAN_TOO_DEEP } from './json.js';
import type { SplitLine } from './lines.js';
import type { ErrorPolicy } from './policy.js';

/**
 * Parses one line that must hold a JSON object; reports it under the error policy when it does not
 * (too long, nested too deep, invalid JSON, another JSON value) and returns undefined. Numbers a
 * double cannot carry are kept as LosslessNumbers (see json.ts) unless `exact` is false: a reader
 * that never writes or stores a number's value then skips the scan for them (only a line long enough
 * to nest too deep is scanned). `input` names the line's origin
 * in messages when it is not stdin.
 */
export function parseObjectLine(
  line: SplitLine,
  text: string,
  policy: ErrorPolicy,
  maxLineBytes: number,
  input?: string,
  exact = true,
  scanned?: number,
): JsonObject | undefined {
  if (line.tooLong > 0) {
    policy.report(line.no, `line is ${line.tooLong} bytes, longer than --max-line-bytes ${maxLineBytes}`, '', input);
    return undefined;
  }
  // `scanned`: scanJson's answer for this text, found on the thread that read it (a log's reader thread).
  const scan = scanned !== undefined ? (exact || scanned === SCAN_TOO_DEEP ? scanned : SCAN_PLAIN) : exact ? scanJson(text) : nestsDeeperThan(text) ? SCAN_TOO_DEEP : SCAN_PLAIN;
  if (scan === SCAN_TOO_DEEP) {
    policy.report(line.no, NESTING_MESSAGE, text, input);
    return undefined;
  }
  let value: unknown;
  try {
    value = parseJson(text, scan);
  } catch (error) {
    policy.report(line.no, `invalid JSON: ${messageOf(error)}`, line.text, input);
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    policy.report(line.no, `not a JSON object (got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value})`, line.text, input);
    return undefined;
  }
  return value as JsonObject;
}

/** Checks a line a source read is one JSON object; returns its text when it is. */
export function checkObjectLine(line: SplitLine, policy: ErrorPolicy, maxLineBytes: number, input?: string): string | undefined {
  return parseObjectLine(line, line.text, policy, maxLineBytes, input, false) === undefined ? undefined : line.text;
}
