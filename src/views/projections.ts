/**
 * How each kind of view applies events to its tables in SQLite: column views (upsert, insert, delete,
 * increment), handler modules, and the default `events` table.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import type { JsonObject } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { importModule } from '../core/import-module.js';
import type { Position, PositionMap } from '../core/position.js';
import { compileFallbackPath, compilePath } from '../core/paths.js';
import type { PathGetter } from '../core/paths.js';
import { DEFAULT_KEY_PATHS, DEFAULT_TYPE_PATHS, viewHash } from './definition.js';
import { q } from './versions.js';
import { amountConverter, BadEvent, bindable, CONVERTERS, describe, plain, type Convert, type SqlValue } from './column-values.js';
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
/** The definition hash of the `events` table. */
export const EVENTS_HASH = 'events-table-v1';

/** An SQL string literal. */
function sqlText(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** The SQL function increments add with: SQLite's `+` would round an integer overflow to a REAL silently. */
export const EXACT_SUM = 'cqp_exact_sum';

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
export interface Projection {
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

/**
 * Loads the previous version of a handler module from its stored text, so that the live version of its
 * view stays up to date while the new one is built. The text is written beside the current module (what
 * it imports by relative path resolves as before) and removed once loaded.
 */
export async function loadPreviousHandler(view: HandlerViewDefinition, source: string, hash: string): Promise<ViewHandler> {
  const extension = extname(view.handler);
  const copy = join(dirname(view.handler), `.${basename(view.handler, extension)}.cqp-previous-${hash.slice(0, 12)}${extension}`);
  try {
    writeFileSync(copy, source);
    return await loadHandler({ ...view, handler: copy }, hash);
  } catch (error) {
    throw new CqpError('CONFIG', `view ${view.table}: cannot load the previous version of ${view.handler}: ${messageOf(error)}`, { cause: error });
  } finally {
    rmSync(copy, { force: true });
  }
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

/** The `events` table kept without a views file, as a view among others. */
export interface EventsDefinition {
  kind: 'events';
  table: typeof EVENTS_VIEW;
}
export const EVENTS_DEFINITION: EventsDefinition = { kind: 'events', table: EVENTS_VIEW };

/** A view the store maintains: one of a views file, or the default `events` table. */
export type StoredView = ViewDefinition | EventsDefinition;

export function projectionFor(db: SqliteDatabase, view: StoredView, handler: ViewHandler | undefined): Projection {
  if (view.kind === 'events') return new EventsProjection(db);
  if (view.kind === 'columns') return new ColumnProjection(db, view);
  return new HandlerProjection(db, view, handler as ViewHandler);
}

/** Makes a view's tables (a handler view's `init` does). */
export function create(db: SqliteDatabase, view: StoredView, handler: ViewHandler | undefined): void {
  if (view.kind === 'events') for (const sql of EventsProjection.createSql) db.exec(sql);
  else if (view.kind === 'columns') db.exec(ColumnProjection.createSql(view));
  else new HandlerProjection(db, view, handler as ViewHandler).init();
}

