import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import type { JsonObject } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { importModule } from '../core/import-module.js';
import { acquireLock, type WriterLock } from '../log/lock.js';
import { compareN, hasParts, holds, isApplied, minimumPositions } from '../core/position.js';
import type { Position, PositionMap } from '../core/position.js';
import { compileFallbackPath, compilePath } from '../core/paths.js';
import type { PathGetter } from '../core/paths.js';
import { DEFAULT_KEY_PATHS, DEFAULT_TYPE_PATHS, viewHash } from './definition.js';
import { amountConverter, BadEvent, bindable, CONVERTERS, describe, exactSum, plain, type Convert, type SqlValue } from './column-values.js';
import type { ColumnType, ColumnViewDefinition, HandlerViewDefinition, ViewDefinition } from './definition.js';

/** One event for `applyBatch`: the parsed event, its position, and optionally its text (stored as is). */
export interface ViewEvent {
  event: object;
  position?: Position | undefined;
  text?: string | undefined;
}

/** Called for an event a view cannot apply (`index` into the batch); throw to abort the batch. */
export type BadEventHandler = (index: number, message: string) => void;

/** The transaction-bound SQL helper a handler module receives. */
export interface ViewSql {
  run(sql: string, ...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
  get<T = Record<string, unknown>>(sql: string, ...params: unknown[]): T | undefined;
  all<T = Record<string, unknown>>(sql: string, ...params: unknown[]): T[];
}

/** What a handler module's default export provides (`handler: ./stats.mjs`). */
export interface ViewHandler {
  /** Runs once when the view is built (or rebuilt): create its tables here. */
  init?(sql: ViewSql): void;
  /** Applies one event; runs inside the batch's transaction and must be synchronous. */
  handle(event: JsonObject, sql: ViewSql): void;
}

/** The name of the view kept when no views file is given. */
export const EVENTS_VIEW = 'events';
const EVENTS_HASH = 'events-table-v1';

function q(identifier: string): string {
  return `"${identifier.replace(/"/g, '""')}"`;
}

/** An SQL string literal. */
function sqlText(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** The SQL function increments add with: SQLite's `+` would round an integer overflow to a REAL silently. */
const EXACT_SUM = 'cqp_exact_sum';

/** Runs a statement; short parameter lists go as arguments, which better-sqlite3 binds faster than an array. */
function runWith(statement: Statement, p: SqlValue[]): void {
  switch (p.length) {
    case 1:
      statement.run(p[0]);
      return;
    case 2:
      statement.run(p[0], p[1]);
      return;
    case 3:
      statement.run(p[0], p[1], p[2]);
      return;
    case 4:
      statement.run(p[0], p[1], p[2], p[3]);
      return;
    case 5:
      statement.run(p[0], p[1], p[2], p[3], p[4]);
      return;
    case 6:
      statement.run(p[0], p[1], p[2], p[3], p[4], p[5]);
      return;
    default:
      statement.run(p);
  }
}

const SQL_TYPES: Record<ColumnType, string> = { text: 'TEXT', integer: 'INTEGER', real: 'REAL', json: 'TEXT', boolean: 'INTEGER' };

/** One maintained view: its committed positions and how it applies an event. */
interface Projection {
  readonly name: string;
  applied: PositionMap;
  apply(event: JsonObject, item: ViewEvent): void;
}

interface PreparedColumn {
  name: string;
  get: PathGetter;
  convert: Convert;
  where: string;
}

interface Amount {
  get: PathGetter;
  convert: Convert;
  where: string;
}

type ColumnAction =
  | { kind: 'upsert' | 'insert' }
  | { kind: 'delete'; statement: Statement }
  | { kind: 'increment'; statement: Statement; params: SqlValue[]; amounts: Amount[] };

class ColumnProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  private readonly table: string;
  private readonly keyColumn: string;
  private readonly keyOf: PathGetter;
  private readonly keyConvert: Convert;
  private readonly keyWhere: string;
  private readonly typeOf: PathGetter;
  private readonly columns: PreparedColumn[];
  private readonly actions = new Map<string, ColumnAction>();
  private readonly upserts = new Map<number | string, Statement>();
  private readonly inserts = new Map<number | string, Statement>();
  private readonly params: SqlValue[] = [];
  private readonly present: number[] = [];

  constructor(
    private readonly db: SqliteDatabase,
    view: ColumnViewDefinition,
  ) {
    this.name = view.table;
    this.table = q(view.table);
    this.keyColumn = q(view.key.column);
    this.keyOf = compileFallbackPath(view.key.paths);
    this.keyConvert = CONVERTERS[view.key.type];
    this.keyWhere = `key ${view.key.paths.join(' / ')}`;
    this.typeOf = compileFallbackPath(view.typePaths);
    this.columns = view.columns
      .filter((c) => c.path !== undefined)
      .map((c) => ({ name: q(c.name), get: compilePath(c.path as string), convert: CONVERTERS[c.type ?? 'any'], where: `column ${c.name} (${c.path})` }));
    const types = new Map(view.columns.map((c) => [c.name, c.type ?? 'any'] as const));
    for (const [type, action] of Object.entries(view.on)) {
      if (action.kind === 'delete') {
        this.actions.set(type, { kind: 'delete', statement: db.prepare(`DELETE FROM ${this.table} WHERE ${this.keyColumn} = ?`) });
      } else if (action.kind === 'increment') {
        const names = Object.keys(action.columns).map(q);
        // The key goes last so the amounts fill the parameter array from index 0.
        const sql =
          `INSERT INTO ${this.table} (${names.join(', ')}, ${this.keyColumn}) VALUES (${names.map(() => '?').join(', ')}, ?) ` +
          `ON CONFLICT (${this.keyColumn}) DO UPDATE SET ${names
            .map((n, i) => `${n} = ${EXACT_SUM}(${n}, excluded.${n}, ${sqlText(`increment of ${Object.keys(action.columns)[i] ?? ''} (${Object.values(action.columns)[i] ?? ''})`)})`)
            .join(', ')}`;
        const amounts = Object.entries(action.columns).map(([column, path]) => ({
          get: compilePath(path),
          convert: amountConverter(types.get(column) ?? 'real'),
          where: `increment of ${column} (${path})`,
        }));
        this.actions.set(type, { kind: 'increment', statement: db.prepare(sql), params: new Array<SqlValue>(names.length + 1).fill(null), amounts });
      } else {
        this.actions.set(type, { kind: action.kind });
      }
    }
  }

  /** The table's DDL: increment targets default to 0 so sums start there. */
  static createSql(view: ColumnViewDefinition): string {
    const incremented = new Set<string>();
    for (const action of Object.values(view.on)) if (action.kind === 'increment') for (const c of Object.keys(action.columns)) incremented.add(c);
    const columns = view.columns.map((c) => `${q(c.name)}${c.type ? ` ${SQL_TYPES[c.type]}` : ''}${incremented.has(c.name) ? ' DEFAULT 0' : ''}`);
    const key = `${q(view.key.column)} ${SQL_TYPES[view.key.type]} PRIMARY KEY NOT NULL`;
    return `CREATE TABLE ${q(view.table)} (${[key, ...columns].join(', ')})`;
  }

  apply(event: JsonObject): void {
    const type = this.typeOf(event);
    if (typeof type !== 'string') return;
    const action = this.actions.get(type);
    if (action === undefined) return;
    const rawKey = this.keyOf(event);
    if (rawKey === undefined || rawKey === null) throw new BadEvent(`no ${this.keyWhere} in a ${type} event`);
    const key = this.keyConvert(rawKey, this.keyWhere);
    switch (action.kind) {
      case 'upsert':
      case 'insert':
        this.write(action.kind, key, event);
        return;
      case 'delete':
        action.statement.run(key);
        return;
      case 'increment': {
        const params = action.params;
        for (let i = 0; i < action.amounts.length; i++) {
          const amount = action.amounts[i] as Amount;
          const value = amount.get(event);
          if (value === undefined || value === null) throw new BadEvent(`${amount.where}: missing in a ${type} event`);
          params[i] = amount.convert(value, amount.where);
        }
        params[action.amounts.length] = key;
        runWith(action.statement, params);
        return;
      }
    }
  }

  /** Writes the key and the columns whose paths the event has (upsert updates only those). */
  private write(kind: 'upsert' | 'insert', key: SqlValue, event: JsonObject): void {
    const params = this.params;
    const present = this.present;
    params.length = 1;
    present.length = 0;
    params[0] = key;
    let mask = 0;
    const columns = this.columns;
    for (let i = 0; i < columns.length; i++) {
      const c = columns[i] as PreparedColumn;
      const value = c.get(event);
      if (value === undefined) continue;
      params.push(c.convert(value, c.where));
      present.push(i);
      if (i < 30) mask |= 1 << i;
    }
    const id = columns.length <= 30 ? mask : present.join(',');
    const statements = kind === 'upsert' ? this.upserts : this.inserts;
    let statement = statements.get(id);
    if (statement === undefined) {
      statement = this.db.prepare(this.writeSql(kind, present));
      statements.set(id, statement);
    }
    try {
      runWith(statement, params);
    } catch (error) {
      if (kind === 'insert' && (error as { code?: unknown }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new BadEvent(`${this.name} already has a row with key ${describe(key)} (insert adds new rows; use upsert to update them)`);
      }
      throw error;
    }
  }

  private writeSql(kind: 'upsert' | 'insert', present: number[]): string {
    const names = [this.keyColumn, ...present.map((i) => (this.columns[i] as PreparedColumn).name)];
    const insert = `INSERT INTO ${this.table} (${names.join(', ')}) VALUES (${names.map(() => '?').join(', ')})`;
    if (kind === 'insert') return insert;
    if (names.length === 1) return `${insert} ON CONFLICT (${this.keyColumn}) DO NOTHING`;
    const set = names.slice(1).map((n) => `${n} = excluded.${n}`);
    return `${insert} ON CONFLICT (${this.keyColumn}) DO UPDATE SET ${set.join(', ')}`;
  }
}

class EventsProjection implements Projection {
  applied: PositionMap = {};
  readonly name = EVENTS_VIEW;
  private readonly insert: Statement;
  private readonly idOf = compileFallbackPath(['header.eventId', 'id']);
  private readonly typeOf = compileFallbackPath(DEFAULT_TYPE_PATHS);
  private readonly keyOf = compileFallbackPath(DEFAULT_KEY_PATHS);
  private readonly timeOf = compileFallbackPath(['header.createdTimestamp', 'time']);

  constructor(db: SqliteDatabase) {
    this.insert = db.prepare(`INSERT INTO ${EVENTS_VIEW} (event_id, type, entity_key, time, body) VALUES (?, ?, ?, ?, ?)`);
  }

  static readonly createSql = [
    `CREATE TABLE ${EVENTS_VIEW} (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT, type TEXT, entity_key TEXT, time TEXT, body TEXT)`,
    `CREATE INDEX ${EVENTS_VIEW}_by_key ON ${EVENTS_VIEW} (entity_key)`,
    `CREATE INDEX ${EVENTS_VIEW}_by_type ON ${EVENTS_VIEW} (type)`,
  ];

  apply(event: JsonObject, item: ViewEvent): void {
    this.insert.run(
      plain(this.idOf(event) ?? null),
      plain(this.typeOf(event) ?? null),
      plain(this.keyOf(event) ?? null),
      plain(this.timeOf(event) ?? null),
      item.text ?? JSON.stringify(event),
    );
  }
}

/** Builds the SQL helper handed to handler modules; it works only while `active()` says so. */
function sqlHelper(db: SqliteDatabase, name: string, active: () => boolean): ViewSql {
  const cache = new Map<string, Statement>();
  const prepare = (sql: string): Statement => {
    if (!active()) throw new CqpError('STAGE', `view ${name}: the sql helper works only inside init() and handle()`);
    let statement = cache.get(sql);
    if (statement === undefined) {
      statement = db.prepare(sql);
      if (cache.size < 200) cache.set(sql, statement);
    }
    return statement;
  };
  const bind = (params: unknown[]): unknown[] => params.map(bindable);
  return {
    run: (sql, ...params) => prepare(sql).run(...bind(params)),
    get: <T>(sql: string, ...params: unknown[]) => prepare(sql).get(...bind(params)) as T | undefined,
    all: <T>(sql: string, ...params: unknown[]) => prepare(sql).all(...bind(params)) as T[],
  };
}

/** Loads every handler module of `views` as a sqlite sink does at start (`cqp lint` checks them this way). */
export async function loadHandlers(views: ViewDefinition[]): Promise<void> {
  for (const view of views) if (view.kind === 'handler') await loadHandler(view, viewHash(view));
}

export async function loadHandler(view: HandlerViewDefinition, hash: string): Promise<ViewHandler> {
  let module: { default?: unknown };
  try {
    // The hash in the URL makes a changed module load anew instead of from the import cache.
    module = (await importModule(`${pathToFileURL(view.handler).href}?v=${hash}`)) as { default?: unknown };
  } catch (error) {
    throw new CqpError('CONFIG', `view ${view.table}: cannot load handler module ${view.handler}: ${messageOf(error)}`, { cause: error });
  }
  const d = module.default;
  if (typeof d === 'function') return { handle: d as ViewHandler['handle'] };
  if (typeof d === 'object' && d !== null && typeof (d as ViewHandler).handle === 'function') {
    const init = (d as ViewHandler).init;
    if (init !== undefined && typeof init !== 'function') {
      throw new CqpError('CONFIG', `view ${view.table}: ${view.handler}: init must be a function (init(sql) { ... })`);
    }
    return d as ViewHandler;
  }
  throw new CqpError('CONFIG', `view ${view.table}: ${view.handler} must export default { init?(sql), handle(event, sql) }`);
}

class HandlerProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  readonly sql: ViewSql;
  private active = false;
  private readonly inSavepoint: (event: JsonObject) => unknown;

  constructor(
    db: SqliteDatabase,
    view: HandlerViewDefinition,
    readonly handler: ViewHandler,
  ) {
    this.name = view.table;
    this.sql = sqlHelper(db, view.table, () => this.active);
    // Nested in the batch transaction this is a savepoint: a failing event leaves no partial writes.
    this.inSavepoint = db.transaction((event: JsonObject) => {
      const result = handler.handle(event, this.sql) as unknown;
      if (typeof (result as { then?: unknown } | undefined)?.then === 'function') {
        throw new CqpError('CONFIG', `view ${this.name}: handle() returned a promise; handlers run inside a SQLite transaction and must be synchronous`);
      }
    });
  }

  /** Runs `init` for a freshly built view. */
  init(): void {
    if (!this.handler.init) return;
    this.active = true;
    try {
      this.handler.init(this.sql);
    } catch (error) {
      throw new CqpError('CONFIG', `view ${this.name}: init() of its handler module failed: ${messageOf(error)}`, { cause: error });
    } finally {
      this.active = false;
    }
  }

  apply(event: JsonObject): void {
    this.active = true;
    try {
      this.inSavepoint(event);
    } catch (error) {
      if (error instanceof CqpError) throw error;
      throw new BadEvent(`handler failed: ${messageOf(error)}`);
    } finally {
      this.active = false;
    }
  }
}

interface ViewRow {
  definition_hash: string;
  tables: string;
}

const META_SQL = [
  'CREATE TABLE IF NOT EXISTS cqp_positions (view TEXT NOT NULL, source TEXT NOT NULL, n TEXT NOT NULL, PRIMARY KEY (view, source)) WITHOUT ROWID',
  'CREATE TABLE IF NOT EXISTS cqp_views (view TEXT PRIMARY KEY NOT NULL, definition_hash TEXT NOT NULL, tables TEXT NOT NULL)',
];

function userTables(db: SqliteDatabase): Set<string> {
  const rows = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[];
  return new Set(rows);
}

/** A failure of SQLite itself (disk full, I/O error, a damaged file) named with the database file. */
function storageError(dbFile: string, error: unknown): unknown {
  const code = (error as { code?: unknown }).code;
  if (error instanceof CqpError || typeof code !== 'string' || !code.startsWith('SQLITE_')) return error;
  const hint = code === 'SQLITE_FULL' ? '; free some space on its disk and run again (the batch was rolled back)' : '';
  return new CqpError('IO', `SQLite database ${dbFile}: ${messageOf(error)} (${code})${hint}`, { cause: error });
}

function openError(dbFile: string, error: unknown): CqpError {
  return new CqpError('IO', `cannot open SQLite database ${dbFile}: ${messageOf(error)}`, { cause: error });
}

/**
 * SQLite query views maintained from events: each view keeps its own positions, and each
 * batch is applied in one transaction together with the new positions, so every event counts once.
 */
export class ViewStore {
  private readonly upsertPosition: Statement;
  private readonly selectPositions: Statement;
  private readonly transaction: (items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined) => PositionMap[];

  private constructor(
    readonly db: SqliteDatabase,
    private readonly dbFile: string,
    private readonly lock: WriterLock,
    private readonly projections: Projection[],
  ) {
    this.upsertPosition = db.prepare(
      'INSERT INTO cqp_positions (view, source, n) VALUES (?, ?, ?) ON CONFLICT (view, source) DO UPDATE SET n = excluded.n',
    );
    this.selectPositions = db.prepare('SELECT view, source, n FROM cqp_positions');
    // IMMEDIATE takes SQLite's write lock at BEGIN, so the positions read first in the batch are the
    // ones its commit builds on: no other connection can move them in between.
    const transaction = db.transaction((items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined) => this.applyInTransaction(items, onBad, through));
    this.transaction = transaction.immediate.bind(transaction);
  }

  /** Loads every view's stored positions; run inside each write transaction, never trusted from memory. */
  private readPositions(): void {
    const byView = new Map<string, PositionMap>(this.projections.map((p) => [p.name, {}]));
    for (const row of this.selectPositions.all() as Array<{ view: string; source: string; n: string }>) {
      const map = byView.get(row.view);
      if (map !== undefined) map[row.source] = row.n;
    }
    for (const p of this.projections) p.applied = byView.get(p.name) as PositionMap;
  }

  /**
   * Opens (or creates) the database and builds new or changed views; without views, the `events` table.
   * `building`: a replay's new database, which no reader opens and which is discarded unless the whole
   * replay succeeds. It keeps its rollback journal in memory (a batch that fails still rolls back) and
   * syncs nothing: WAL would write every page twice (into the WAL, then into the file at the checkpoint),
   * and the replay flushes the file itself before the rename.
   */
  static async open(dbFile: string, views: ViewDefinition[] | undefined, building = false): Promise<ViewStore> {
    const hashes = (views ?? []).map(viewHash);
    const handlers = new Map<string, ViewHandler>();
    for (const [i, view] of (views ?? []).entries()) {
      if (view.kind === 'handler') handlers.set(view.table, await loadHandler(view, hashes[i] as string));
    }
    try {
      mkdirSync(dirname(dbFile), { recursive: true });
    } catch (error) {
      throw new CqpError('IO', `${dbFile}: cannot create the folder of the SQLite database (${messageOf(error)})`, { cause: error });
    }
    // One writer per database for its whole life, as for the log: a second one would apply every event again.
    const lock = acquireLock(dbFile);
    let db: SqliteDatabase;
    try {
      db = new Database(dbFile);
      db.pragma('busy_timeout = 5000');
      db.pragma(building ? 'journal_mode = MEMORY' : 'journal_mode = WAL');
      db.pragma(building ? 'synchronous = OFF' : 'synchronous = NORMAL');
      for (const sql of META_SQL) db.exec(sql);
      db.function(EXACT_SUM, { deterministic: true, safeIntegers: true }, exactSum);
    } catch (error) {
      lock.release();
      throw openError(dbFile, error);
    }
    try {
      const projections: Projection[] = [];
      if (views === undefined) {
        ViewStore.build(db, dbFile, EVENTS_VIEW, EVENTS_HASH, () => {
          for (const sql of EventsProjection.createSql) db.exec(sql);
        });
        projections.push(new EventsProjection(db));
      } else {
        views.forEach((view, i) => {
          const hash = hashes[i] as string;
          if (view.kind === 'columns') {
            ViewStore.build(db, dbFile, view.table, hash, () => db.exec(ColumnProjection.createSql(view)));
            projections.push(new ColumnProjection(db, view));
          } else {
            const projection = new HandlerProjection(db, view, handlers.get(view.table) as ViewHandler);
            ViewStore.build(db, dbFile, view.table, hash, () => projection.init());
            projections.push(projection);
          }
        });
      }
      const store = new ViewStore(db, dbFile, lock, projections);
      store.readPositions();
      return store;
    } catch (error) {
      db.close();
      lock.release();
      throw error;
    }
  }

  /** Builds a view from empty unless its stored definition matches; `create` makes its tables. */
  private static build(db: SqliteDatabase, dbFile: string, view: string, hash: string, create: () => void): void {
    const row = db.prepare('SELECT definition_hash, tables FROM cqp_views WHERE view = ?').get(view) as ViewRow | undefined;
    const existing = userTables(db);
    const tables = row ? (JSON.parse(row.tables) as string[]) : [];
    if (row && row.definition_hash === hash && tables.every((t) => existing.has(t))) return;
    db.transaction(() => {
      for (const t of tables) db.exec(`DROP TABLE IF EXISTS ${q(t)}`);
      const before = userTables(db);
      if (!row && before.has(view)) {
        throw new CqpError('CONFIG', `table "${view}" already exists in ${dbFile} and is not a view cqp built; choose another table name, or drop that table`);
      }
      create();
      const made = [...userTables(db)].filter((t) => !before.has(t));
      db.prepare('DELETE FROM cqp_positions WHERE view = ?').run(view);
      db.prepare('INSERT OR REPLACE INTO cqp_views (view, definition_hash, tables) VALUES (?, ?, ?)').run(view, hash, JSON.stringify(made));
    })();
  }

  /** Names of the maintained views, in definition order. */
  get views(): string[] {
    return this.projections.map((p) => p.name);
  }

  /** Per source, the smallest position every view holds; a source some view lacks is left out. */
  applied(): PositionMap {
    return minimumPositions(this.projections.map((p) => p.applied));
  }

  /** Positions one view holds. */
  appliedBy(view: string): PositionMap {
    return { ...this.projections.find((p) => p.name === view)?.applied };
  }

  /**
   * Applies a batch in one transaction: each view applies the events past its own position and stores
   * its new positions. Events a view cannot apply go to `onBad` (default: throw, rolling the batch back).
   * `through`: the positions the input was read to, bad events skipped before the sink included; the
   * views store them too, so a view whose last events were bad still holds the end of what it read.
   */
  applyBatch(items: ViewEvent[], onBad: BadEventHandler = throwBadEvent, through?: PositionMap): void {
    if (items.length === 0 && through === undefined) return;
    let pending: PositionMap[];
    try {
      pending = this.transaction(items, onBad, through);
    } catch (error) {
      throw storageError(this.dbFile, error);
    }
    for (let v = 0; v < this.projections.length; v++) {
      const applied = (this.projections[v] as Projection).applied;
      const moved = pending[v] as PositionMap;
      for (const source in moved) applied[source] = moved[source] as string;
    }
  }

  private applyInTransaction(items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined): PositionMap[] {
    // Positions are read here, inside the write transaction: even a writer that got past the lock
    // (or a stale copy in memory) cannot make a view apply an event twice.
    this.readPositions();
    const projections = this.projections;
    const ranges = positionRanges(items);
    for (const source in through) {
      const n = through[source] as string;
      const range = ranges.get(source);
      if (range === undefined) ranges.set(source, { min: n, max: n });
      else if (compareFast(n, range.max) > 0) range.max = n;
    }
    // A view whose positions are all below the batch applies every event without comparing positions.
    const check = projections.map((p) => {
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && (compareFast(last, range.min) >= 0 || holds(last, range.min))) return true;
        // Positions kept per part of a source: isApplied places the whole source's events, or refuses them.
        if (hasParts(p.applied, source)) return true;
      }
      return false;
    });
    for (let i = 0; i < items.length; i++) {
      const item = items[i] as ViewEvent;
      const position = item.position;
      for (let v = 0; v < projections.length; v++) {
        const p = projections[v] as Projection;
        if (check[v] === true && position !== undefined && isApplied(p.applied, position)) continue;
        try {
          p.apply(item.event as JsonObject, item);
        } catch (error) {
          if (!(error instanceof BadEvent)) throw error;
          onBad(i, `view ${p.name}: ${error.message}`);
        }
      }
    }
    // Every event at or below a view's position was skipped and every other one applied: the view now
    // holds the batch's largest position of each source.
    return projections.map((p) => {
      const moved: PositionMap = {};
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && compareFast(range.max, last) <= 0) continue;
        moved[source] = range.max;
        this.upsertPosition.run(p.name, source, range.max);
      }
      return moved;
    });
  }

  /** Closes the database, then gives up the writer lock (never before: see `acquireLock`). */
  close(): void {
    if (this.db.open) this.db.close();
    this.lock.release();
  }
}

export interface Range {
  min: string;
  max: string;
}

/** The smallest and largest position of each source in a batch. */
export function positionRanges(items: ViewEvent[]): Map<string, Range> {
  const ranges = new Map<string, Range>();
  let lastSource: string | undefined;
  let range: Range | undefined;
  for (let i = 0; i < items.length; i++) {
    const position = (items[i] as ViewEvent).position;
    if (position === undefined) continue;
    if (position.source !== lastSource || range === undefined) {
      lastSource = position.source;
      range = ranges.get(lastSource);
      if (range === undefined) {
        range = { min: position.n, max: position.n };
        ranges.set(lastSource, range);
        continue;
      }
    }
    if (compareFast(position.n, range.max) > 0) range.max = position.n;
    else if (compareFast(position.n, range.min) < 0) range.min = position.n;
  }
  return ranges;
}

/** `compareN` without allocations for plain integers (the common case); sub-indexed ones go to it. */
export function compareFast(a: string, b: string): number {
  if (a.length === 0 || b.length === 0 || a.includes('.') || b.includes('.') || a.charCodeAt(0) === 48 || b.charCodeAt(0) === 48) {
    return compareN(a, b);
  }
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function throwBadEvent(index: number, message: string): never {
  throw new CqpError('BAD_INPUT', `event ${index + 1} of the batch: ${message}`);
}

/**
 * The positions a database holds for these views (read-only), as `ViewStore.applied()` would give:
 * a supervisor resumes its source after them. A missing file, or a view not built yet or built from
 * another definition, holds nothing.
 */
export function readViewsApplied(dbFile: string, views: ViewDefinition[] | undefined): PositionMap {
  if (!existsSync(dbFile)) return {};
  let db: SqliteDatabase;
  try {
    db = new Database(dbFile, { readonly: true, fileMustExist: true });
  } catch (error) {
    throw openError(dbFile, error);
  }
  try {
    const names = views === undefined ? [EVENTS_VIEW] : views.map((v) => v.table);
    const hashes = views === undefined ? [EVENTS_HASH] : views.map(viewHash);
    const hasMeta = db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('cqp_views', 'cqp_positions')").pluck().get() === 2;
    if (!hasMeta || names.length === 0) return {};
    const hashOf = db.prepare('SELECT definition_hash FROM cqp_views WHERE view = ?').pluck();
    const positions = db.prepare('SELECT source, n FROM cqp_positions WHERE view = ?');
    const maps = names.map((name, i) => {
      const map: PositionMap = {};
      if (hashOf.get(name) !== hashes[i]) return map;
      for (const row of positions.all(name) as Array<{ source: string; n: string }>) map[row.source] = row.n;
      return map;
    });
    return minimumPositions(maps);
  } finally {
    db.close();
  }
}

/**
 * Makes a database file whole on its own: its WAL checkpointed into it and WAL mode left, so no `-wal`
 * beside it can be lost when the file is renamed (a replay's new views database, before the swap).
 */
export function detachWal(dbFile: string): void {
  const db = new Database(dbFile, { fileMustExist: true });
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.pragma('journal_mode = DELETE');
  } finally {
    db.close();
  }
}
