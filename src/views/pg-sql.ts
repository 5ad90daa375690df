/**
 * The SQL the PostgreSQL views write: the tables they create, values as the text PostgreSQL parses, and
 * the set-based statements of a batch. A batch's writes go as one multi-statement query together with
 * its positions and COMMIT (one round trip); a multi-statement query takes no parameters, so the
 * column arrays are quoted literals (`'{"a","b",NULL}'::text[]`), every element quoted.
 */
import { BadEvent, type SqlValue } from './column-values.js';
import type { ColumnType, ColumnViewDefinition } from './definition.js';
import { q } from './pg-connection.js';
import { EVENTS_VIEW } from './store.js';

/** Column types in PostgreSQL; an untyped column keeps the value's text (numbers exactly as written). */
export const PG_TYPES: Record<ColumnType | 'any', string> = { any: 'text', text: 'text', integer: 'bigint', real: 'double precision', json: 'jsonb', boolean: 'boolean' };

/** The smallest value PostgreSQL's bigint holds. */
export const INT64_MIN = -(2n ** 63n);
/** The largest value PostgreSQL's bigint holds. */
export const INT64_MAX = 2n ** 63n - 1n;

/** A lone UTF-16 surrogate (no valid Unicode: PostgreSQL's UTF-8 has no place for it). */
const LONE_SURROGATE = /\p{Cs}/u;
/** Every escape of a JSON text (backslashes appear only in its strings, each starting one escape). */
const JSON_ESCAPE = /\\(?:u([0-9a-fA-F]{4})|[^u])/g;
/**
 * A JSON text that may hold a number beyond PostgreSQL's numeric: a 5-digit exponent, or a run of digits
 * that a 4-digit exponent could push past 16383 decimals (the lookbehind keeps the search linear).
 */
const MAYBE_HUGE_NUMBER = /[eE][+-]?0*[1-9]\d{4}|(?<!\d)\d{6385}/;
/** The strings and numbers of a JSON text. */
const JSON_STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/g;

/** Why PostgreSQL's jsonb would refuse this JSON text (a \u0000 escape, a lone surrogate, a number beyond numeric), or undefined. */
function jsonbRefusal(text: string): string | undefined {
  if (text.includes('\\u')) {
    JSON_ESCAPE.lastIndex = 0;
    for (let m = JSON_ESCAPE.exec(text); m !== null; m = JSON_ESCAPE.exec(text)) {
      if (m[1] === undefined) continue;
      const code = parseInt(m[1], 16);
      if (code === 0) return 'PostgreSQL cannot store the NUL character (\\u0000) in text';
      if (code < 0xd800 || code > 0xdfff) continue;
      const low = /^\\u[dD][c-fC-F][0-9a-fA-F]{2}/.exec(text.slice(JSON_ESCAPE.lastIndex, JSON_ESCAPE.lastIndex + 6));
      if (code > 0xdbff || low === null) return `a lone UTF-16 surrogate (\\u${m[1]}) is not Unicode text PostgreSQL can store`;
      JSON_ESCAPE.lastIndex += 6;
    }
  }
  if (!MAYBE_HUGE_NUMBER.test(text)) return undefined;
  JSON_STRING_OR_NUMBER.lastIndex = 0;
  for (let m = JSON_STRING_OR_NUMBER.exec(text); m !== null; m = JSON_STRING_OR_NUMBER.exec(text)) {
    if (m[1] === undefined) continue;
    // As PostgreSQL's numeric counts: at most 131072 digits before the decimal point and 16383 after.
    const digits = m[1] + (m[2] ?? '');
    const exponent = Number(m[3] ?? 0);
    const first = digits.search(/[1-9]/);
    const before = first < 0 ? 0 : m[1].length - first + exponent;
    const after = (m[2]?.length ?? 0) - exponent;
    if (before > 131072 || after > 16383) return `the number ${m[0].slice(0, 20)}${m[0].length > 20 ? '…' : ''} is beyond PostgreSQL's numeric`;
  }
  return undefined;
}

/** A value as the text PostgreSQL parses into the column's type; strings PostgreSQL cannot hold are refused. */
export function pgText(value: SqlValue, type: ColumnType | 'any', where: string): string | null {
  if (value === null) return null;
  if (type === 'boolean') return value === 1 || value === 1n ? 'true' : 'false';
  if (typeof value === 'string') {
    // PostgreSQL text holds no NUL character and no lone surrogate (the driver would send U+FFFD in its place).
    if (value.includes('\0')) throw new BadEvent(`${where}: PostgreSQL cannot store the NUL character (\\u0000) in text`);
    if (LONE_SURROGATE.test(value)) throw new BadEvent(`${where}: a lone UTF-16 surrogate is not Unicode text PostgreSQL can store`);
    const refused = type === 'json' ? jsonbRefusal(value) : undefined;
    if (refused !== undefined) throw new BadEvent(`${where}: ${refused}`);
    return value;
  }
  if (type === 'integer' && typeof value === 'number' && !Number.isSafeInteger(value)) {
    const n = Number.isInteger(value) ? BigInt(value) : undefined;
    if (n === undefined || n < INT64_MIN || n > INT64_MAX) throw new BadEvent(`${where}: ${String(value)} is not an integer PostgreSQL's bigint holds`);
    return n.toString();
  }
  return typeof value === 'bigint' ? value.toString() : String(value);
}

/** A string literal, right whatever standard_conforming_strings says (backslashes go in an E'' literal). */
export function literal(text: string): string {
  const quoted = text.includes("'") ? text.replace(/'/g, "''") : text;
  return text.includes('\\') ? `E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}

const ARRAY_ESCAPE = /["\\]/g;

/** An array of values (PostgreSQL's text, or NULL) as a literal of `type[]`. */
export function arrayLiteral(values: ReadonlyArray<string | null>, type: string): string {
  let text = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as string | null;
    if (i > 0) text += ',';
    if (v === null) text += 'NULL';
    else text += `"${v.includes('"') || v.includes('\\') ? v.replace(ARRAY_ESCAPE, '\\$&') : v}"`;
  }
  return `${literal(`${text}}`)}::${type}[]`;
}

/** The table of a columns view: the key its primary key, columns an increment adds to starting at 0. */
export function columnTableSql(schema: string, view: ColumnViewDefinition): string {
  const incremented = new Set<string>();
  for (const action of Object.values(view.on)) if (action.kind === 'increment') for (const c of Object.keys(action.columns)) incremented.add(c);
  const columns = view.columns.map((c) => `${q(c.name)} ${PG_TYPES[c.type ?? 'any']}${incremented.has(c.name) ? ' DEFAULT 0' : ''}`);
  const key = `${q(view.key.column)} ${PG_TYPES[view.key.type]} PRIMARY KEY NOT NULL`;
  return `CREATE TABLE ${q(schema)}.${q(view.table)} (${[key, ...columns].join(', ')})`;
}

/** The table (and indexes) of the views without a views file: every event, in order. */
export function eventsTableSql(schema: string): string[] {
  const t = `${q(schema)}.${EVENTS_VIEW}`;
  return [
    `CREATE TABLE ${t} (seq bigserial PRIMARY KEY, event_id text, type text, entity_key text, time text, body jsonb NOT NULL)`,
    `CREATE INDEX ${EVENTS_VIEW}_by_key ON ${t} (entity_key)`,
    `CREATE INDEX ${EVENTS_VIEW}_by_type ON ${t} (type)`,
  ];
}

/** Appends rows (columns of PostgreSQL text: event id, type, key, time, body) to the events table, in order. */
export function eventsInsertSql(schema: string, columns: ReadonlyArray<ReadonlyArray<string | null>>): string {
  const [ids, types, keys, times, bodies] = columns as [string[], string[], string[], string[], string[]];
  return (
    `INSERT INTO ${q(schema)}.${EVENTS_VIEW} (event_id, type, entity_key, time, body) SELECT i, t, k, tm, b FROM unnest(` +
    `${arrayLiteral(ids, 'text')}, ${arrayLiteral(types, 'text')}, ${arrayLiteral(keys, 'text')}, ${arrayLiteral(times, 'text')}, ${arrayLiteral(bodies, 'jsonb')}) ` +
    'WITH ORDINALITY AS u(i, t, k, tm, b, o) ORDER BY o'
  );
}

/** The schema's own tables: each view's positions per source, and each view's definition and tables. */
export function metaSql(schema: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${q(schema)}`,
    `CREATE TABLE IF NOT EXISTS ${q(schema)}.cqp_positions (view text NOT NULL, source text NOT NULL, n text NOT NULL, PRIMARY KEY (view, source))`,
    `CREATE TABLE IF NOT EXISTS ${q(schema)}.cqp_views (view text PRIMARY KEY NOT NULL, definition_hash text NOT NULL, tables jsonb NOT NULL)`,
    // The definition a view's live version is kept up to date from while a new version is built beside it
    // (added to a schema an older cqp made; checked first, so that no lock is taken once it is there).
    `DO $cqp_meta$BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = ${literal(schema)} AND table_name = 'cqp_views' AND column_name = 'definition') ` +
      `THEN ALTER TABLE ${q(schema)}.cqp_views ADD COLUMN definition text; END IF; END$cqp_meta$`,
  ];
}

/** Reads every view's positions (inside the batch's transaction: this writer alone changes them). */
export function positionsSelectSql(schema: string): string {
  return `SELECT view, source, n FROM ${q(schema)}.cqp_positions`;
}

/** Stores views' new positions: rows of (view, source, n). */
export function positionsUpsertSql(schema: string, rows: ReadonlyArray<readonly [string, string, string]>): string {
  const values = rows.map(([view, source, n]) => `(${literal(view)}, ${literal(source)}, ${literal(n)})`);
  return `INSERT INTO ${q(schema)}.cqp_positions (view, source, n) VALUES ${values.join(', ')} ON CONFLICT (view, source) DO UPDATE SET n = excluded.n`;
}

/** A columns view's table and key, as its statements name them. */
export interface ViewTable {
  /** `"schema"."table"`. */
  table: string;
  /** The key column, quoted. */
  key: string;
  /** The key's PostgreSQL type. */
  keyType: string;
}

/** Deletes the rows of these keys. */
export function deleteSql(t: ViewTable, keys: ReadonlyArray<string>): string {
  return `DELETE FROM ${t.table} WHERE ${t.key} = ANY(${arrayLiteral(keys, t.keyType)})`;
}

/** A column an upsert writes: its quoted name, PostgreSQL type, whether the value is added, and one value per row. */
export interface UpsertColumn {
  name: string;
  type: string;
  add: boolean;
  values: Array<string | null>;
}

/** One multi-row upsert: the rows' keys, and the columns each row sets (or adds to). */
export function upsertSql(t: ViewTable, keys: ReadonlyArray<string>, columns: readonly UpsertColumn[]): string {
  const names = [t.key, ...columns.map((c) => c.name)];
  const arrays = [arrayLiteral(keys, t.keyType), ...columns.map((c) => arrayLiteral(c.values, c.type))];
  const insert = `INSERT INTO ${t.table} AS cqp_row (${names.join(', ')}) SELECT * FROM unnest(${arrays.join(', ')})`;
  if (columns.length === 0) return `${insert} ON CONFLICT (${t.key}) DO NOTHING`;
  const set = columns.map(({ name: n, add }) => (add ? `${n} = coalesce(cqp_row.${n}, 0) + excluded.${n}` : `${n} = excluded.${n}`));
  return `${insert} ON CONFLICT (${t.key}) DO UPDATE SET ${set.join(', ')}`;
}

/** The keys of these rows that exist already (read inside the batch's transaction). */
export function existingKeysSql(t: ViewTable): string {
  return `SELECT ${t.key}::text AS k FROM ${t.table} WHERE ${t.key} = ANY($1::${t.keyType}[])`;
}

/** The SQLSTATE the positions guard raises. */
export const POSITIONS_MOVED = 'CQ001';

/**
 * Checks, inside the batch's transaction, that the stored positions of these views for the batch's
 * sources are `expected` (per view, per source; views holding none of them left out), and raises POSITIONS_MOVED otherwise, which aborts
 * the transaction before any of its writes: a batch folded against positions held in memory then
 * needs no round trip to read them first. Undefined when the literals could not be quoted in its body.
 */
export function positionsGuardSql(schema: string, views: readonly string[], sources: readonly string[], expected: Record<string, Record<string, string>>): string | undefined {
  const stored =
    `SELECT coalesce(jsonb_object_agg(view, m), '{}'::jsonb) FROM (SELECT view, jsonb_object_agg(source, n) AS m FROM ${q(schema)}.cqp_positions ` +
    `WHERE view = ANY(${arrayLiteral(views, 'text')}) AND source = ANY(${arrayLiteral(sources, 'text')}) GROUP BY view) per_view`;
  const body = `BEGIN IF (${stored}) IS DISTINCT FROM ${literal(JSON.stringify(expected))}::jsonb THEN RAISE EXCEPTION 'the stored positions are not those the batch was folded against' USING ERRCODE = '${POSITIONS_MOVED}'; END IF; END`;
  return body.includes('$cqp_guard$') ? undefined : `DO $cqp_guard$${body}$cqp_guard$`;
}
