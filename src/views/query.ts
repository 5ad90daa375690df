import { existsSync, readFileSync, statSync } from 'node:fs';
import { once } from 'node:events';
import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import { CqpError, messageOf } from '../core/errors.js';
import { LosslessNumber, stringifyJson } from '../core/json.js';

export interface QueryOptions {
  /** NDJSON, one object per row, instead of a table. */
  json?: boolean | undefined;
  /** Longest cell shown in a table before it is cut (default 60). */
  maxCellWidth?: number | undefined;
}

/** Where results go: stdout, or any writable stream. */
export interface QueryOutput {
  write(chunk: string): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

const MAX_CELL = 60;

function cell(value: unknown, max: number): string {
  let text: string;
  if (value === null || value === undefined) text = '';
  else if (Buffer.isBuffer(value)) text = `x'${value.toString('hex')}'`;
  else if (value instanceof Date) text = value.toISOString();
  else if (typeof value === 'object' && !(value instanceof LosslessNumber)) text = stringifyJson(value) ?? String(value);
  else text = String(value);
  text = text.replace(/\r?\n/g, '\\n').replace(/\t/g, '\\t');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function jsonValue(value: unknown): unknown {
  // An integer beyond 2^53 is printed as a number with all its digits.
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : new LosslessNumber(value.toString());
  if (Buffer.isBuffer(value)) return value.toString('base64');
  return value;
}

async function write(out: QueryOutput, text: string): Promise<void> {
  if (!out.write(text)) await once(out as unknown as NodeJS.EventEmitter, 'drain');
}

function prepare(db: SqliteDatabase, dbFile: string, sql: string): Statement {
  let statement: Statement;
  try {
    statement = db.prepare(sql);
  } catch (error) {
    throw new CqpError('USAGE', `cqp query ${dbFile}: SQLite rejects the query: ${messageOf(error)}`, { cause: error });
  }
  if (!statement.reader) {
    throw new CqpError('USAGE', `cqp query ${dbFile}: only queries that return rows (SELECT, WITH, PRAGMA …) can run here; the database is opened read-only`);
  }
  return statement.safeIntegers(true);
}

/** Prints rows: an aligned table (numbers right-aligned, NULL empty, long cells cut), or NDJSON with `json`. */
export async function printRows(columns: string[], rows: Iterable<unknown[]>, options: QueryOptions, out: QueryOutput): Promise<number> {
  if (options.json) {
    for (const row of rows) {
      const object: Record<string, unknown> = {};
      for (let i = 0; i < columns.length; i++) object[columns[i] as string] = jsonValue(row[i]);
      await write(out, `${stringifyJson(object) ?? '{}'}\n`);
    }
    return 0;
  }
  const max = options.maxCellWidth ?? MAX_CELL;
  const cells: string[][] = [];
  const widths = columns.map((c) => Math.min(c.length, max));
  const numeric = columns.map(() => true);
  for (const row of rows) {
    const line = row.map((value, i) => {
      const text = cell(value, max);
      if (text.length > (widths[i] as number)) widths[i] = text.length;
      if (value !== null && typeof value !== 'number' && typeof value !== 'bigint' && !(value instanceof LosslessNumber)) numeric[i] = false;
      return text;
    });
    cells.push(line);
  }
  const count = cells.length;
  const format = (line: string[]): string =>
    line
      .map((text, i) => (numeric[i] ? text.padStart(widths[i] as number) : text.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  let text = `${format(columns.map((c) => cell(c, max)))}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`;
  for (const line of cells) {
    text += `${format(line)}\n`;
    if (text.length > 65536) {
      await write(out, text);
      text = '';
    }
  }
  text += `(${count} ${count === 1 ? 'row' : 'rows'})\n`;
  await write(out, text);
  return 0;
}

/** Databases up to this size are queried from a copy in memory when no writer has them open. */
const IN_MEMORY_MAX_BYTES = 256 * 1024 * 1024;
/** Bytes 18 and 19 of a SQLite file: its write and read format versions, 2 for WAL, 1 for rollback. */
const FORMAT_VERSION_BYTES = [18, 19] as const;

/**
 * Opens a views database for reading without leaving files beside it. A WAL database read through its
 * file needs `-wal` and `-shm` files; a read-only connection creates them when missing and cannot remove
 * them (only a writer's last close does), so every query would leave two empty files. The SQLite built
 * into better-sqlite3 takes no URI (`immutable=1`), so: without a `-wal` file no writer has the database
 * open and everything is in the main file, which is read into memory and queried there (its WAL mark
 * set back to rollback in the copy only: a copy in memory has no `-shm`). With a `-wal` file, a writer is
 * running (its files exist already) and the query reads through them, seeing the latest commit. A larger
 * database than IN_MEMORY_MAX_BYTES is read through its file as well.
 */
function openReadOnly(dbFile: string): SqliteDatabase {
  if (!existsSync(`${dbFile}-wal`) && statSync(dbFile).size <= IN_MEMORY_MAX_BYTES) {
    const bytes = readFileSync(dbFile);
    if (bytes.length >= 100 && bytes[18] === 2 && bytes[19] === 2) for (const at of FORMAT_VERSION_BYTES) bytes[at] = 1;
    return new Database(bytes, { readonly: true });
  }
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  return db;
}

/**
 * Runs one read-only SQL query on a views database and prints the rows: an aligned table (numbers
 * right-aligned, NULL empty, long cells cut), or NDJSON with `json`. Resolves to the exit code (0);
 * a missing file or SQL that SQLite rejects throws a CqpError.
 */
export async function runQuery(dbFile: string, sql: string, options: QueryOptions, out: QueryOutput): Promise<number> {
  if (!existsSync(dbFile)) {
    throw new CqpError('USAGE', `cqp query: no database at ${dbFile} (make one with cqp-sink sqlite --db ${dbFile})`);
  }
  let db: SqliteDatabase;
  try {
    db = openReadOnly(dbFile);
  } catch (error) {
    throw new CqpError('IO', `cqp query: cannot open ${dbFile} as a SQLite database: ${messageOf(error)}`, { cause: error });
  }
  try {
    const statement = prepare(db, dbFile, sql);
    const columns = statement.columns().map((c) => c.name);
    const rows = statement.raw(true).iterate() as IterableIterator<unknown[]>;
    try {
      return await printRows(columns, rows, options, out);
    } catch (error) {
      if (!(error instanceof Database.SqliteError)) throw error;
      throw new CqpError('USAGE', `cqp query ${dbFile}: the query failed: ${messageOf(error)}`, { cause: error });
    }
  } finally {
    db.close();
  }
}

/** The state `cqp views` gives a view no longer in the views file: kept as it stands, no longer updated. */
const REMOVED = 'removed (kept until --drop-removed-views)';

/** The rows `cqp views` prints for one database: each view's record and positions, as `state`. */
function viewRows(db: SqliteDatabase, state: string): unknown[][] {
  const hasMeta = db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('cqp_views', 'cqp_positions')").pluck().get() === 2;
  if (!hasMeta) return [];
  const positions = db.prepare('SELECT source, n FROM cqp_positions WHERE view = ? ORDER BY source');
  // A database made before views no longer in the file were marked has no `removed` column: none is marked there.
  const marked = (db.prepare("SELECT count(*) FROM pragma_table_info('cqp_views') WHERE name = 'removed'").pluck().get() as number) > 0;
  const views = db.prepare(`SELECT view, definition_hash, tables, ${marked ? 'removed' : '0 AS removed'} FROM cqp_views ORDER BY view`).all() as Array<{
    view: string;
    definition_hash: string;
    tables: string;
    removed: number;
  }>;
  return views.map((v) => {
    const at = (positions.all(v.view) as Array<{ source: string; n: string }>).map((p) => `${p.source} ${p.n}`).join(', ');
    return [v.view, v.removed ? REMOVED : state, v.definition_hash, at, (JSON.parse(v.tables) as string[]).join(', ')];
  });
}

/**
 * Lists the views of a SQLite views database: each with its state (`live`, served; `building`, a new
 * version being built beside it in DB.rebuild; `removed`, no longer in the views file, kept as it stands
 * until a sink runs with --drop-removed-views), its definition's hash, the positions it holds and its tables.
 */
export async function listViews(
  dbFile: string,
  options: QueryOptions,
  out: QueryOutput,
  warn: (message: string) => void = (message) => process.stderr.write(`cqp views: ${message}\n`),
): Promise<number> {
  if (!existsSync(dbFile)) throw new CqpError('USAGE', `cqp views: no database at ${dbFile} (make one with cqp-sink sqlite --db ${dbFile})`);
  const rows: unknown[][] = [];
  for (const [file, state] of [
    [dbFile, 'live'],
    [`${dbFile}.rebuild`, 'building'],
  ] as const) {
    if (file !== dbFile && !existsSync(file)) continue;
    let db: SqliteDatabase;
    try {
      db = openReadOnly(file);
    } catch (error) {
      if (file === dbFile) throw new CqpError('IO', `cqp views: cannot open ${file} as a SQLite database: ${messageOf(error)}`, { cause: error });
      // The build's database, unreadable, hides nothing of the live views: they are listed all the same.
      warn(`cannot read ${file}, where changed views are built beside the live ones (${messageOf(error)}); the live views are listed without it`);
      continue;
    }
    try {
      rows.push(...viewRows(db, state));
    } catch (error) {
      if (file === dbFile) throw error;
      warn(`cannot read ${file}, where changed views are built beside the live ones (${messageOf(error)}); the live views are listed without it`);
    } finally {
      db.close();
    }
  }
  rows.sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  return printRows(['view', 'state', 'definition', 'position', 'tables'], rows, options, out);
}
