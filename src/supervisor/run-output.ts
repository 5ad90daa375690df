/**
 * What the supervisor does to each line a `run:` program writes, before it goes on. A `run:` program
 * knows nothing of positions beyond keeping the `"@cqp"` key of its input (see core/position.ts); the
 * supervisor turns what it writes into events with positions of their own:
 *
 * - Consecutive outputs stamped with the same input position `n` become `n.0`, `n.1`, … by output
 *   order, so a sink holds each of them apart. A restart resumes at input `n` (`resumeAt`), the program
 *   makes the same outputs again (it must be deterministic) and the sinks skip those they hold.
 * - A line without the key, while the source stamps every event, could be neither skipped nor kept
 *   exactly once: the pipeline stops and says so. So does a line whose position goes back to an input
 *   already left behind (a sink would skip it).
 * - A line that is not a JSON object is the program's fault, reported under its stage's `onError`.
 *
 * The common line, stamped as its last key, costs a look at its tail and a new stamp; only other lines
 * are parsed.
 */
import { CqpError } from '../core/errors.js';
import { createPolicy, cut, type ErrorMode, type ErrorPolicy } from '../core/policy.js';
import { compareN, parsePosition, POSITION_KEY, splitStamp, stampLine, subPosition, type Position, type PositionMap } from '../core/position.js';
import type { StagePlan } from './plan.js';
import type { PumpOptions } from './pump.js';

export interface RunOutputOptions {
  /** The stage's name and command line, for messages. */
  stage: string;
  argv: string[];
  /** True when the stage's input carries positions (the source stamps every event). */
  positioned: boolean;
  /** The stage's `onError` (default `fail`) and `deadLetter`, for lines that are not JSON objects. */
  onError: ErrorMode | undefined;
  deadLetter: string | undefined;
  /** Diagnostics (skipped lines), one line each. */
  warn: (line: string) => void;
  /** Called for each line skipped or dead-lettered. */
  badLine: () => void;
}

/** What became of a run of whole lines: the bytes to forward, and the error that stops the stage. */
export interface Rewritten {
  bytes: Buffer;
  error?: CqpError;
}

const QUOTED_KEY = `"${POSITION_KEY}"`;

export class RunOutput {
  private lineNo = 0;
  /** The input position of the latest outputs, and how many have had it. */
  private group: Position | undefined;
  private k = 0;
  /** Per source, the latest input position seen. */
  private readonly latest: PositionMap = {};
  private readonly who: string;
  private readonly policy: ErrorPolicy;

  constructor(private readonly options: RunOutputOptions) {
    this.who = `stage ${options.stage} (run: ${options.argv.join(' ')})`;
    const mode = options.onError ?? 'fail';
    this.policy = createPolicy({ mode, deadLetter: options.deadLetter, input: `stage ${options.stage} output`, warn: options.warn });
  }

  /** Checks and restamps whole lines (each ended by `\n`). */
  rewrite(chunk: Buffer): Rewritten {
    const lines = chunk.toString('utf8').split('\n');
    lines.pop();
    const out: string[] = [];
    for (const raw of lines) {
      this.lineNo++;
      const line = raw.charCodeAt(raw.length - 1) === 13 ? raw.slice(0, -1) : raw;
      if (line.trim() === '') continue;
      try {
        const next = this.restamp(line);
        if (next !== undefined) out.push(next);
      } catch (error) {
        return { bytes: join(out), error: error instanceof CqpError ? error : new CqpError('BAD_INPUT', String(error)) };
      }
    }
    return { bytes: join(out) };
  }

  /** The line to forward, undefined to drop it (skipped under the policy); throws to stop the stage. */
  private restamp(line: string): string | undefined {
    let { text, position } = splitStamp(line);
    if (position === undefined || line.charCodeAt(0) !== 123) {
      const parsed = this.parse(line);
      if (parsed === undefined) return undefined;
      ({ text, position } = parsed);
    }
    if (position === undefined) {
      if (!this.options.positioned) return line;
      throw new CqpError(
        'STAGE',
        `${this.who} wrote line ${this.lineNo} without its "@cqp" key, so cqp cannot tell which input it came from and could not keep it exactly once: keep the "@cqp" key of each input event on every event made from it (most JSON libraries do when the program changes the event it read)\n  ${cut(line)}`,
      );
    }
    return stampLine(text, this.next(position, line));
  }

  /** The position of the next output made from the input at `p`. */
  private next(p: Position, line: string): Position {
    if (this.group !== undefined && this.group.source === p.source && this.group.n === p.n) return subPosition(p, this.k++);
    const latest = this.latest[p.source];
    if (latest !== undefined && compareN(p.n, latest) <= 0) {
      throw new CqpError(
        'STAGE',
        `${this.who} wrote line ${this.lineNo} for input ${p.source}:${p.n} after events of a later input (${p.source}:${latest}); the sinks would skip it: write the events made from each input together and in input order\n  ${cut(line)}`,
      );
    }
    this.latest[p.source] = p.n;
    this.group = p;
    this.k = 1;
    return subPosition(p, 0);
  }

  /** A line that is not stamped as its last key: parsed to check it and to find its stamp. */
  private parse(line: string): { text: string; position: Position | undefined } | undefined {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      value = undefined;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      if (this.policy.mode === 'fail') throw new CqpError('BAD_INPUT', `${this.who} wrote a line that is not a JSON object: line ${this.lineNo}: ${cut(line)}`);
      this.policy.report(this.lineNo, 'not a JSON object', line);
      this.options.badLine();
      return undefined;
    }
    const stamp = (value as Record<string, unknown>)[POSITION_KEY];
    if (stamp === undefined) return { text: line, position: undefined };
    const position = typeof stamp === 'string' ? parsePosition(stamp) : undefined;
    let text = line;
    for (let without = withoutMember(text); without !== undefined; without = withoutMember(text)) text = without;
    return { text, position };
  }
}

/** The pump options that check a `run:` stage's output (a new check per process: positions start afresh). */
export function runOutputChecks(
  stage: StagePlan,
  hooks: Pick<RunOutputOptions, 'positioned' | 'warn' | 'badLine'> & { failed: (error: CqpError) => void },
): Pick<PumpOptions, 'rewrite' | 'failed'> {
  const output = new RunOutput({
    stage: stage.name,
    argv: [stage.command.file, ...stage.command.args],
    onError: stage.runtime?.onError,
    deadLetter: stage.runtime?.deadLetter,
    ...hooks,
  });
  return { rewrite: (lines) => output.rewrite(lines), failed: hooks.failed };
}

function join(lines: string[]): Buffer {
  return lines.length === 0 ? Buffer.alloc(0) : Buffer.from(`${lines.join('\n')}\n`);
}

/**
 * The text of a valid JSON object without its first top-level `"@cqp"` member (keeping every other
 * byte as it was), or undefined when it has none. A scan of strings and nesting, not a re-serialisation.
 */
function withoutMember(text: string): string | undefined {
  let depth = 0;
  /** Where the separator before the current top-level member is (`{` or `,`). */
  let separator = -1;
  let expectKey = false;
  let member: { start: number } | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      const start = i;
      for (i++; text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92) i++;
      if (depth === 1 && expectKey) {
        expectKey = false;
        const key = text.slice(start, i + 1);
        if (key === QUOTED_KEY || (key.includes('\\') && JSON.parse(key) === POSITION_KEY)) member = { start: separator };
      }
    } else if (c === 123 || c === 91) {
      depth++;
      if (depth === 1) [separator, expectKey] = [i, true];
    } else if (c === 125 || c === 93 || c === 44) {
      if (depth === 1 && member) {
        // Cut `,"@cqp":…` before this separator, or `"@cqp":…,` when it was the first member.
        if (text.charCodeAt(member.start) === 44) return text.slice(0, member.start) + text.slice(i);
        return text.slice(0, member.start + 1) + text.slice(c === 44 ? i + 1 : i);
      }
      if (c === 44) {
        if (depth === 1) [separator, expectKey] = [i, true];
      } else depth--;
    }
  }
  return undefined;
}
