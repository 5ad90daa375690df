/**
 * Positions make exactly-once possible. A resumable source stamps every event with the position it
 * came from, as the last key of the object: `...,"@cqp":"<source>:<n>"}`. The stage runtime carries
 * the stamp past user code; exactly-once sinks (log, sqlite) store the last position they applied, in
 * the same write as the events, and skip events at or below it. Sinks strip the stamp before writing.
 *
 * `<source>` names the input (`file:<fingerprint>`, `log:<logId>`, `kinesis:<stream>/<shard>`,
 * `demo:<seed>`) so that a different input is never mistaken for one already applied; `<n>` is a
 * non-negative decimal integer of any length that grows along the source (a byte offset after the
 * event, a log sequence number, a Kinesis sequence number). Resuming "after n" yields the next events.
 */
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

/** Parses `<source>:<n>`; undefined when the text is not a position. */
export function parsePosition(text: string): Position | undefined {
  const i = text.lastIndexOf(':');
  if (i <= 0) return undefined;
  const n = text.slice(i + 1);
  if (!/^\d+$/.test(n)) return undefined;
  return { source: text.slice(0, i), n };
}

/** Compares two position numbers of one source, as integers of any length. */
export function compareN(a: string, b: string): number {
  const x = stripZeros(a);
  const y = stripZeros(b);
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

function stripZeros(s: string): string {
  let i = 0;
  while (i < s.length - 1 && s.charCodeAt(i) === 48) i++;
  return i === 0 ? s : s.slice(i);
}

/** True when a sink that has applied `applied` already holds the event at `p`. */
export function isApplied(applied: PositionMap, p: Position): boolean {
  const last = applied[p.source];
  return last !== undefined && compareN(p.n, last) <= 0;
}

/** Records `p` as applied in `applied` (keeps the larger of the two). */
export function advance(applied: PositionMap, p: Position): void {
  const last = applied[p.source];
  if (last === undefined || compareN(p.n, last) > 0) applied[p.source] = p.n;
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

/** Takes the stamp out of a parsed event (a `run:` program may have moved the key). */
export function takeStamp(event: Record<string, unknown>): Position | undefined {
  const value = event[POSITION_KEY];
  if (value === undefined) return undefined;
  delete event[POSITION_KEY];
  return typeof value === 'string' ? parsePosition(value) : undefined;
}
