import { appendFileSync } from 'node:fs';
import { CqpError } from './errors.js';

export type ErrorMode = 'fail' | 'skip' | 'dead-letter';

/** What happens to a bad line or an event a component rejects. */
export interface ErrorPolicy {
  readonly mode: ErrorMode;
  /** Bad lines and rejected events so far. */
  readonly count: number;
  /**
   * Reports one failure at input line `no`. Under `fail` it throws a CqpError (BAD_INPUT) whose
   * message is `<input>:<no>: <message>` followed by the line cut to 200 characters. `input` names
   * where the line came from when that is not the stage's stdin (a source's file).
   */
  report(no: number, message: string, raw: string, input?: string): void;
}

const MAX_SHOWN = 200;
const WARNINGS_PER_SECOND = 10;

export function cut(raw: string, max = MAX_SHOWN): string {
  return raw.length > max ? `${raw.slice(0, max)}…` : raw;
}

/** Builds the policy named by `--on-error`, writing warnings through `warn`. */
export function createPolicy(options: {
  mode: ErrorMode;
  deadLetter?: string | undefined;
  input?: string;
  warn: (message: string) => void;
  /** Called with the count after each failure reported (`cqp run` counts them where they happen). */
  counted?: (count: number) => void;
  /** Called with each failure and the line it was about (`cqp tap --errors-of`). */
  rejected?: (message: string, raw: string) => void;
}): ErrorPolicy {
  const input = options.input ?? 'stdin';
  if (options.mode === 'dead-letter' && !options.deadLetter) {
    throw new CqpError('USAGE', '--on-error dead-letter needs --dead-letter FILE (where rejected lines are appended)');
  }
  let count = 0;
  let windowStart = 0;
  let shownInWindow = 0;
  let suppressed = 0;
  return {
    mode: options.mode,
    get count() {
      return count;
    },
    report(no, message, raw, from = input) {
      count++;
      options.counted?.(count);
      options.rejected?.(message, raw);
      const where = `${from}:${no}`;
      if (options.mode === 'fail') {
        throw new CqpError('BAD_INPUT', `${where}: ${message}\n  ${cut(raw)}`);
      }
      if (options.mode === 'dead-letter') {
        const record = from === input ? { line: no, error: message, raw } : { input: from, line: no, error: message, raw };
        appendFileSync(options.deadLetter as string, `${JSON.stringify(record)}\n`);
        return;
      }
      const now = Date.now();
      if (now - windowStart >= 1000) {
        if (suppressed > 0) options.warn(`cqp: ${suppressed} more bad lines skipped`);
        windowStart = now;
        shownInWindow = 0;
        suppressed = 0;
      }
      if (shownInWindow < WARNINGS_PER_SECOND) {
        shownInWindow++;
        options.warn(`cqp: skipped ${where}: ${message}`);
      } else {
        suppressed++;
      }
    },
  };
}
