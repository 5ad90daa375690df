import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Database as SqliteDatabase, Statement } from 'better-sqlite3';
import { CqpError, messageOf } from '../core/errors.js';
import { acquireLock, type WriterLock } from '../log/lock.js';
import { compareN, hasParts, holds, isApplied, minimumPositions } from '../core/position.js';
import type { PositionMap } from '../core/position.js';
import { viewHash } from './definition.js';
import type { JsonObject } from '../core/component.js';
import { dropView, notOurs, q, rebuildFileOf, recordVersion, removedViews, removeRebuildFile, swapIn, userTables, type StoredHandler } from './versions.js';
import type { BesideStore, ShadowStore } from './rebuild.js';
import { BadEvent, exactSum } from './column-values.js';
import type { ColumnViewDefinition, ViewDefinition } from './definition.js';
import {
  create,
  EVENTS_DEFINITION,
  EVENTS_HASH,
  EVENTS_VIEW,
  EXACT_SUM,
  loadHandler,
  loadPreviousHandler,
  projectionFor,
  type BadEventHandler,
  type Projection,
  type StoredView,
  type ViewEvent,
  type ViewHandler,
} from './projections.js';

export { EVENTS_VIEW, loadHandler, loadHandlers, type BadEventHandler, type ViewEvent, type ViewHandler, type ViewSql } from './projections.js';

interface ViewRow {
  definition_hash: string;
  tables: string;
  definition: string | null;
}

/** A view to build beside its live version (or, new, beside the live views) from the log, then swap in. */
export interface PendingView {
  definition: StoredView;
  hash: string;
  /** Why: its definition changed, or it is new in the file. */
  reason: 'changed' | 'new';
  /** True when its live version is served but not kept up to date until the swap (its definition is not stored). */
  frozen: boolean;
}

/** How `ViewStore.open` treats views. */
export interface OpenOptions {
  /**
   * A replay's new database, which no reader opens and which is discarded unless the whole replay
   * succeeds: its rollback journal in memory and no syncs (see `open`).
   */
  building?: boolean | undefined;
  /**
   * The caller can build changed and new views from the log beside the live ones (`pending`): they are
   * left as they are here. Without it they are rebuilt in place, from empty.
   */
  beside?: boolean | undefined;
  /** Drop the tables of views no longer in the views file (kept otherwise). */
  dropRemoved?: boolean | undefined;
  /** Where to say what happens to changed and removed views; silent without it. */
  warn?: ((message: string) => void) | undefined;
}

const META_SQL = [
  'CREATE TABLE IF NOT EXISTS cqp_positions (view TEXT NOT NULL, source TEXT NOT NULL, n TEXT NOT NULL, PRIMARY KEY (view, source)) WITHOUT ROWID',
  // `definition`: a column view's definition (JSON), so that its version stays up to date while a new one is built.
  // `removed`: 1 while the view is no longer in the views file (kept as it stands, no longer updated).
  'CREATE TABLE IF NOT EXISTS cqp_views (view TEXT PRIMARY KEY NOT NULL, definition_hash TEXT NOT NULL, tables TEXT NOT NULL, definition TEXT, removed INTEGER NOT NULL DEFAULT 0)',
];

/** Adds what later versions keep in cqp_views to a database made before them. */
function upgradeMeta(db: SqliteDatabase): void {
  const columns = db.prepare("SELECT name FROM pragma_table_info('cqp_views')").pluck().all() as string[];
  if (!columns.includes('definition')) db.exec('ALTER TABLE cqp_views ADD COLUMN definition TEXT');
  if (!columns.includes('removed')) db.exec('ALTER TABLE cqp_views ADD COLUMN removed INTEGER NOT NULL DEFAULT 0');
}

/** Whether a view's stored version is of its definition, of another one, or missing (or incomplete). */
function viewState(db: SqliteDatabase, row: ViewRow | undefined, hash: string): 'current' | 'changed' | 'new' {
  if (row === undefined) return 'new';
  const existing = userTables(db);
  if (!(JSON.parse(row.tables) as string[]).every((t) => existing.has(t))) return 'new';
  return row.definition_hash === hash ? 'current' : 'changed';
}

/** The live version of a changed view, maintained from its stored definition; undefined when it has none usable. */
async function previousVersion(db: SqliteDatabase, row: ViewRow, warn: ((message: string) => void) | undefined): Promise<Projection | undefined> {
  if (row.definition === null) return undefined;
  const old = JSON.parse(row.definition) as ColumnViewDefinition | StoredHandler;
  if (old.kind === 'columns') return projectionFor(db, old, undefined);
  try {
    return projectionFor(db, old, await loadPreviousHandler(old, old.source, row.definition_hash));
  } catch (error) {
    warn?.(`${messageOf(error)}; its live version is served as it stands until the new one takes its place`);
    return undefined;
  }
}

/** Raises each source of `target` to the position `map` holds when larger. */
function raise(target: PositionMap, map: PositionMap): void {
  for (const source in map) {
    const n = map[source] as string;
    const t = target[source];
    if (t === undefined || compareFast(n, t) > 0) target[source] = n;
  }
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
export class ViewStore implements BesideStore {
  private readonly upsertPosition: Statement;
  private readonly selectPositions: Statement;
  private readonly transaction: (items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined) => PositionMap[];
  /** Per source, the largest position handed to any view so far (see `reach`). */
  private readonly reached: PositionMap = {};
  /** Milliseconds spent applying batches so far: how busy the live stream keeps this store. */
  get busyMs(): number {
    return this.busy;
  }
  private busy = 0;
  /** Views to build beside the live ones (see OpenOptions.beside); empty otherwise. */
  readonly pending: PendingView[] = [];

  private constructor(
    readonly db: SqliteDatabase,
    private readonly dbFile: string,
    private readonly lock: WriterLock,
    private readonly projections: Projection[],
    private readonly handlers: Map<string, ViewHandler>,
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
   * `building` (a replay's new database) keeps its rollback journal in memory (a batch that fails still
   * rolls back) and syncs nothing: WAL would write every page twice (into the WAL, then into the file at
   * the checkpoint), and the replay flushes the file itself before the rename.
   */
  static async open(dbFile: string, views: ViewDefinition[] | undefined, options: boolean | OpenOptions = false): Promise<ViewStore> {
    const { building, beside, dropRemoved, warn } = typeof options === 'boolean' ? { building: options } : options;
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
      db.pragma(building === true ? 'journal_mode = MEMORY' : 'journal_mode = WAL');
      db.pragma(building === true ? 'synchronous = OFF' : 'synchronous = NORMAL');
      for (const sql of META_SQL) db.exec(sql);
      upgradeMeta(db);
      db.function(EXACT_SUM, { deterministic: true, safeIntegers: true }, exactSum);
    } catch (error) {
      lock.release();
      throw openError(dbFile, error);
    }
    try {
      const projections: Projection[] = [];
      const pending: PendingView[] = [];
      const defined = views ?? [EVENTS_DEFINITION];
      const selectRow = db.prepare('SELECT definition_hash, tables, definition FROM cqp_views WHERE view = ?');
      const rows = defined.map((view) => selectRow.get(view.table) as ViewRow | undefined);
      const states = defined.map((_, i) => viewState(db, rows[i], views === undefined ? EVENTS_HASH : (hashes[i] as string)));
      // A view added beside live ones is built beside them too: its table appears once complete.
      const anyLive = states.includes('current') || states.includes('changed');
      for (const [i, view] of defined.entries()) {
        const hash = views === undefined ? EVENTS_HASH : (hashes[i] as string);
        const row = rows[i];
        const state = states[i] as 'current' | 'changed' | 'new';
        if (state === 'current') {
          projections.push(projectionFor(db, view, handlers.get(view.table)));
          continue;
        }
        if (beside === true && (state === 'changed' || anyLive)) {
          // The live version goes on from its stored definition; one that has none is served as it stands.
          const previous = state === 'changed' && row ? await previousVersion(db, row, warn) : undefined;
          if (previous !== undefined) projections.push(previous);
          if (state === 'new' && userTables(db).has(view.table)) throw notOurs(view.table, dbFile);
          pending.push({ definition: view, hash, reason: state, frozen: state === 'changed' && previous === undefined });
          continue;
        }
        if (state === 'changed' && building !== true) {
          warn?.(`rebuilding ${view.table} in place, from empty (definition changed): readers see it refill; only a sink that reads a command log as it follows it (--read-log --follow, as under cqp run beside a log) builds a new version beside the live one`);
        }
        ViewStore.build(db, dbFile, view, hash, () => create(db, view, handlers.get(view.table)));
        projections.push(projectionFor(db, view, handlers.get(view.table)));
      }
      if (building !== true) removedViews(db, new Set(defined.map((v) => v.table)), dropRemoved === true, warn);
      const store = new ViewStore(db, dbFile, lock, projections, handlers);
      store.pending.push(...pending);
      store.readPositions();
      // What every defined view holds, a version served as it stands included: what was given to it before.
      const names = new Set(defined.map((v) => v.table));
      for (const row of db.prepare('SELECT view, source, n FROM cqp_positions').all() as Array<{ view: string; source: string; n: string }>) {
        if (names.has(row.view)) raise(store.reached, { [row.source]: row.n });
      }
      return store;
    } catch (error) {
      db.close();
      lock.release();
      throw error;
    }
  }

  /** Builds a view from empty: `create` makes its tables. */
  private static build(db: SqliteDatabase, dbFile: string, view: StoredView, hash: string, create: () => void): void {
    const row = db.prepare('SELECT definition_hash, tables FROM cqp_views WHERE view = ?').get(view.table) as ViewRow | undefined;
    const tables = row ? (JSON.parse(row.tables) as string[]) : [];
    db.transaction(() => {
      for (const t of tables) db.exec(`DROP TABLE IF EXISTS ${q(t)}`);
      const before = userTables(db);
      if (!row && before.has(view.table)) throw notOurs(view.table, dbFile);
      create();
      const made = [...userTables(db)].filter((t) => !before.has(t));
      db.prepare('DELETE FROM cqp_positions WHERE view = ?').run(view.table);
      recordVersion(db, 'main', view, hash, made);
    })();
  }

  /**
   * Per source, the largest position any view has been given (stored or written since): a version built
   * beside the live one that holds at least this much can take its place with nothing missed.
   */
  reach(): PositionMap {
    return { ...this.reached };
  }

  /** Opens the database of the versions built beside these views (`rebuildFileOf`); `fresh`: removed first. */
  async openShadow(views: ViewDefinition[] | undefined, fresh: boolean): Promise<ShadowStore> {
    if (fresh) removeRebuildFile(rebuildFileOf(this.dbFile));
    return ViewStore.open(rebuildFileOf(this.dbFile), views, { dropRemoved: true });
  }

  removeShadow(): void {
    removeRebuildFile(rebuildFileOf(this.dbFile));
  }

  /**
   * Puts the new version of `view`, complete in the rebuild database up to its stored positions, in
   * place of its live version (dropped) in one transaction: a reader sees one or the other. From then on
   * it is maintained here. Nothing comes between `ready()` and the swap here (one thread, synchronous).
   */
  adopt(pending: PendingView, _shadow: ShadowStore, ready: () => boolean): boolean {
    if (!ready()) return false;
    const view = pending.definition;
    try {
      swapIn(this.db, this.dbFile, rebuildFileOf(this.dbFile), view, pending.hash);
    } catch (error) {
      throw storageError(this.dbFile, error);
    }
    const handler = this.handlers.get(view.table);
    const fresh = projectionFor(this.db, view, handler);
    const at = this.projections.findIndex((p) => p.name === view.table);
    if (at >= 0) this.projections.splice(at, 1, fresh);
    else this.projections.push(fresh);
    this.readPositions();
    const index = this.pending.indexOf(pending);
    if (index >= 0) this.pending.splice(index, 1);
    return true;
  }

  /** Drops a view's tables, positions and record here (a version built beside, once swapped in). */
  forget(view: string): void {
    const at = this.projections.findIndex((p) => p.name === view);
    if (at >= 0) this.projections.splice(at, 1);
    dropView(this.db, view);
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
    const started = performance.now();
    try {
      pending = this.transaction(items, onBad, through);
    } catch (error) {
      throw storageError(this.dbFile, error);
    } finally {
      this.busy += performance.now() - started;
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
    for (const [source, range] of ranges) raise(this.reached, { [source]: range.max });
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
 * another definition, holds nothing. `beside` (a sink following a log, see OpenOptions.beside): a view
 * built from another definition whose live version is kept up to date holds what that version holds,
 * and views whose new version is built beside the live ones are left out, as the sink leaves them out.
 */
export function readViewsApplied(dbFile: string, views: ViewDefinition[] | undefined, beside = false): PositionMap {
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
    const stored = (db.prepare("SELECT name FROM pragma_table_info('cqp_views')").pluck().all() as string[]).includes('definition');
    const rowOf = db.prepare(`SELECT definition_hash, tables, ${stored ? 'definition' : 'NULL AS definition'} FROM cqp_views WHERE view = ?`);
    const positions = db.prepare('SELECT source, n FROM cqp_positions WHERE view = ?');
    const states = names.map((name, i) => {
      const row = rowOf.get(name) as ViewRow | undefined;
      return { name, state: viewState(db, row, hashes[i] as string), kept: row?.definition != null };
    });
    const anyLive = states.some((v) => v.state !== 'new');
    const maps: PositionMap[] = [];
    for (const { name, state, kept } of states) {
      const map: PositionMap = {};
      if (state === 'current' || (beside && state === 'changed' && kept)) {
        for (const row of positions.all(name) as Array<{ source: string; n: string }>) map[row.source] = row.n;
      } else if (beside && (state === 'changed' || anyLive)) {
        continue;
      }
      maps.push(map);
    }
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
