/**
 * Positions make exactly-once possible. A resumable source stamps every event with the position it
 * came from, as the last key of the object: `...,"@cqp":"<source>:<n>"}`. The stage runtime carries
 * the stamp past user code; exactly-once sinks (log, sqlite) store the last position they applied, in
 * the same write as the events, and skip events at or below it. Sinks strip the stamp before writing.
 *
 * `<source>` names the input (`file:<fingerprint>`, `log:<logId>`, `kinesis:<stream>/<shard>`,
 * `demo:<seed>`) so that a different input is never mistaken for one already applied; `<n>` is a
 * non-negative decimal integer of any length that grows along the source (the byte offset where a line
 * starts, a log sequence number, a Kinesis sequence number), optionally followed by sub-indices `.i`:
 * when one input becomes several events (a filter returning an array, a Kinesis record of several
 * lines), the k-th output gets `<n>.<k>`, so every event a sink sees has its own position.
 *
 * Order: numbers compare as integers, segment by segment; an extension sorts before its prefix
 * (`7.0 < 7.1 < 7`), because plain `7` means "everything from input 7". A sink that stored `7.0`
 * has applied part of input 7, so the source resumes *at* 7 (`resumeAt`), and the sink skips `7.0`.
 */
import { CqpError } from './errors.js';
import { stringifyJson } from './json.js';

export const POSITION_KEY = '@cqp';

const SUFFIX_START = `,"${POSITION_KEY}":"`;
const ONLY_KEY_START = `{"${POSITION_KEY}":"`;

export interface Position {
  source: string;
  n: string;
}

/** The positions a sink has applied, one per source. */
export type PositionMap = Record<string, string>;

export function formatPosition(p: Position): string {
  return `${p.source}:${p.n}`;
}

/** True for `<digits>(.<digits>)*`, checked by hand: this runs for every event. */
function isPositionNumber(n: string): boolean {
  if (n.length === 0) return false;
  let digit = false;
  for (let i = 0; i < n.length; i++) {
    const c = n.charCodeAt(i);
    if (c >= 48 && c <= 57) digit = true;
    else if (c === 46 && digit) digit = false;
    else return false;
  }
  return digit;
}

/** Parses `<source>:<n>`; undefined when the text is not a position. */
export function parsePosition(text: string): Position | undefined {
  const i = text.lastIndexOf(':');
  if (i <= 0) return undefined;
  const n = text.slice(i + 1);
  if (!isPositionNumber(n)) return undefined;
  return { source: text.slice(0, i), n };
}

/** Compares two position numbers of one source (see the order above). */
export function compareN(a: string, b: string): number {
  if (a === b) return 0;
  // The common case, plain numbers, without splitting (this runs per event and per view).
  if (!a.includes('.') && !b.includes('.')) return compareInt(a, b);
  const xs = a.split('.');
  const ys = b.split('.');
  const common = Math.min(xs.length, ys.length);
  for (let i = 0; i < common; i++) {
    const c = compareInt(xs[i] as string, ys[i] as string);
    if (c !== 0) return c;
  }
  if (xs.length === ys.length) return 0;
  return xs.length > ys.length ? -1 : 1;
}

function compareInt(a: string, b: string): number {
  const x = a.charCodeAt(0) === 48 ? stripZeros(a) : a;
  const y = b.charCodeAt(0) === 48 ? stripZeros(b) : b;
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The k-th of several events made from the input at `p`. */
export function subPosition(p: Position, k: number): Position {
  return { source: p.source, n: `${p.n}.${k}` };
}

/**
 * Where a source resumes given the last position a sink applied: after input `n` when it was applied
 * whole, at input `n` when only some of the events made from it were (the sink skips those).
 */
export function resumeAt(applied: string): { n: string; inclusive: boolean } {
  const dot = applied.indexOf('.');
  return dot < 0 ? { n: applied, inclusive: false } : { n: applied.slice(0, dot), inclusive: true };
}

function stripZeros(s: string): string {
  let i = 0;
  while (i < s.length - 1 && s.charCodeAt(i) === 48) i++;
  return i === 0 ? s : s.slice(i);
}

/**
 * True when a sink that has applied `applied` already holds the event at `p`.
 *
 * A source `<S>/<part>` is a part of `<S>`: some of its events, numbered as in `<S>` (a partition of a
 * log, read by a worker of a group, is stamped `log:<logId>/p<k>` with the log's sequence numbers). A
 * sink holding positions of parts of `<S>` that meets an event of the whole `<S>` knows it holds that
 * event when `<S>`'s own position holds it, and knows it does not when no part's position reaches it;
 * in between, which part the event belongs to is unknown, so it throws (a CqpError of code PARTS_HELD) rather than guess and
 * maybe apply the event a second time.
 */
export function isApplied(applied: PositionMap, p: Position): boolean {
  const last = applied[p.source];
  if (last !== undefined && holds(last, p.n)) return true;
  checkParts(applied, p);
  return false;
}

/**
 * True when a sink whose last position of a source is `last` already has the event at `n`: `n` is at or
 * before it, or `last` is one of the events made from `n` (`n.k`). Such an `n` is that input again,
 * through a pipeline that no longer splits it (a `run:` stage removed by an edit or a reload); part of
 * it is held, so it is not applied a second time.
 */
export function holds(last: string, n: string): boolean {
  if (compareN(n, last) <= 0) return true;
  return last.length > n.length && last.charCodeAt(n.length) === 46 /* . */ && last.startsWith(n);
}

/** Records `p` as applied unless it already is; false when the sink holds it already (skip it). Throws as isApplied does. */
export function accept(applied: PositionMap, p: Position): boolean {
  const last = applied[p.source];
  if (last !== undefined && holds(last, p.n)) return false;
  checkParts(applied, p);
  applied[p.source] = p.n;
  return true;
}

/** True when `applied` holds a position of a part of `source` (`<source>/<part>`). */
export function hasParts(applied: PositionMap, source: string): boolean {
  for (const key in applied) if (key.length > source.length && key.charCodeAt(source.length) === 47 && key.startsWith(source)) return true;
  return false;
}

/** Throws when a part of `p.source` held in `applied` reaches `p` (see isApplied). */
export function checkParts(applied: PositionMap, p: Position): void {
  const source = p.source;
  const length = source.length;
  for (const key in applied) {
    if (key.length <= length || key.charCodeAt(length) !== 47 /* / */ || !key.startsWith(source)) continue;
    const n = applied[key] as string;
    if (!holds(n, p.n)) continue;
    throw new CqpError(
      'PARTS_HELD',
      `${source} read whole, but the positions kept are per part of it (${key} up to ${n}, written by workers of a group): ` +
        `which of its events are already applied is unknown, so none is applied (nothing twice). Read it as those workers did (the log source's \`group: NAME\`), ` +
        'or build the store again from the whole log with `cqp replay`',
    );
  }
}

/** Records `p` as applied in `applied` (keeps the larger of the two). */
export function advance(applied: PositionMap, p: Position): void {
  const last = applied[p.source];
  if (last === undefined || compareN(p.n, last) > 0) applied[p.source] = p.n;
}

/**
 * Per source, the smallest of the maps; a source some map lacks is left out, because whoever holds that
 * map needs everything from it (where several sinks or views, fed by one source, all resume).
 */
export function minimumPositions(maps: readonly PositionMap[]): PositionMap {
  const [first, ...rest] = maps;
  if (!first) return {};
  const out: PositionMap = { ...first };
  for (const map of rest) {
    for (const source of Object.keys(out)) {
      const n = map[source];
      if (n === undefined) delete out[source];
      else if (compareN(n, out[source] as string) < 0) out[source] = n;
    }
  }
  return out;
}

/** Appends a position stamp to one NDJSON object line (no trailing newline). */
export function stampLine(line: string, p: Position): string {
  const body = line.trimEnd();
  const close = body.lastIndexOf('}');
  const head = body.slice(0, close).trimEnd();
  const empty = head.endsWith('{');
  return `${head}${empty ? ONLY_KEY_START.slice(1) : SUFFIX_START}${p.source}:${p.n}"}`;
}

/** Splits a stamped line into the event text without its stamp and the position. */
export function splitStamp(line: string): { text: string; position: Position | undefined } {
  if (line.charCodeAt(line.length - 1) !== 125 || line.charCodeAt(line.length - 2) !== 34) {
    return { text: line, position: undefined };
  }
  let at = line.lastIndexOf(SUFFIX_START);
  let text: string;
  if (at >= 0) {
    text = `${line.slice(0, at)}}`;
  } else if (line.startsWith(ONLY_KEY_START)) {
    at = 0;
    text = '{}';
  } else {
    return { text: line, position: undefined };
  }
  const start = at + (at === 0 && text === '{}' ? ONLY_KEY_START.length : SUFFIX_START.length);
  const value = line.slice(start, line.length - 2);
  if (value.includes('"') || value.includes('\\')) return { text: line, position: undefined };
  const position = parsePosition(value);
  if (!position) return { text: line, position: undefined };
  return { text, position };
}

/** Appends a position stamp to the output of JSON.stringify of an object. */
export function stampJson(json: string, p: Position): string {
  return json.length === 2
    ? `${ONLY_KEY_START}${p.source}:${p.n}"}`
    : `${json.slice(0, -1)}${SUFFIX_START}${p.source}:${p.n}"}`;
}

/** The line without its stamp: the last key when a cqp source wrote it; re-serialised otherwise. */
export function stripStamp(line: string, event: object): string {
  const at = line.lastIndexOf(SUFFIX_START);
  if (at >= 0 && line.charCodeAt(line.length - 1) === 125 && line.indexOf('"', at + SUFFIX_START.length) === line.length - 2) {
    return `${line.slice(0, at)}}`;
  }
  return line.startsWith(ONLY_KEY_START) ? '{}' : (stringifyJson(event) ?? '{}');
}

/** Takes the stamp out of a parsed event (the last key, so deleting it keeps the object fast). */
export function takeStamp(event: Record<string, unknown>): Position | undefined {
  const value = event[POSITION_KEY];
  if (value === undefined) return undefined;
  delete event[POSITION_KEY];
  return typeof value === 'string' ? parsePosition(value) : undefined;
}
