/**
 * The versions of a view in a SQLite views database: what cqp_views records of each, the swap that puts
 * a version built beside the live one in its place, and views no longer in the views file.
 */
import type { Database as SqliteDatabase } from 'better-sqlite3';
import { CqpError } from '../core/errors.js';
import { readFileSync, rmSync } from 'node:fs';
import type { HandlerViewDefinition, ViewDefinition } from './definition.js';

/** Where the versions being built beside a views database's views are kept. */
export function rebuildFileOf(dbFile: string): string {
  return `${dbFile}.rebuild`;
}

/** Removes a rebuild database and the files SQLite keeps beside it. */
export function removeRebuildFile(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${file}${suffix}`, { force: true });
}

/** An SQL identifier, quoted. */
export function q(identifier: string): string {
  return `"${identifier.replace(/"/g, '""')}"`;
}

/** The tables of a database besides SQLite's own. */
export function userTables(db: SqliteDatabase, schema = 'main'): Set<string> {
  const rows = db.prepare(`SELECT name FROM ${q(schema)}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`).pluck().all() as string[];
  return new Set(rows);
}

/** A handler view's definition as cqp_views keeps it: with the text of its module. */
export interface StoredHandler extends HandlerViewDefinition {
  source: string;
}

/**
 * What cqp_views keeps of a definition to maintain its version from while a new one is built: a column
 * view's definition, a handler view's with the text of its module (none when it cannot be read).
 */
export function storedDefinition(view: { kind: string }): string | null {
  if (view.kind === 'columns') return JSON.stringify(view);
  if (view.kind !== 'handler') return null;
  try {
    return JSON.stringify({ ...view, source: readFileSync((view as HandlerViewDefinition).handler, 'utf8') });
  } catch {
    return null;
  }
}

export function notOurs(table: string, dbFile: string): CqpError {
  return new CqpError('CONFIG', `table "${table}" already exists in ${dbFile} and is not a view cqp built; choose another table name, or drop that table`);
}

/** The tables cqp_views lists for a view (none when it has no record). */
function tablesOf(db: SqliteDatabase, view: string, schema = 'main'): string[] {
  const tables = db.prepare(`SELECT tables FROM ${q(schema)}.cqp_views WHERE view = ?`).pluck().get(view) as string | undefined;
  return tables === undefined ? [] : (JSON.parse(tables) as string[]);
}

/** Drops a view: its tables, positions and record. */
export function dropView(db: SqliteDatabase, view: string): void {
  db.transaction(() => {
    for (const t of tablesOf(db, view)) db.exec(`DROP TABLE IF EXISTS ${q(t)}`);
    db.prepare('DELETE FROM cqp_positions WHERE view = ?').run(view);
    db.prepare('DELETE FROM cqp_views WHERE view = ?').run(view);
  })();
}

/**
 * Views recorded in the database but no longer defined: kept as they are (no longer updated) unless
 * `drop`, so that a slip in the views file does not destroy a view that took long to build.
 */
export function removedViews(db: SqliteDatabase, defined: Set<string>, drop: boolean, warn: ((message: string) => void) | undefined): void {
  const recorded = db.prepare('SELECT view FROM cqp_views ORDER BY view').pluck().all() as string[];
  const mark = db.prepare('UPDATE cqp_views SET removed = ? WHERE view = ? AND removed <> ?');
  for (const view of recorded) {
    // Put back in the file, a view kept so is one of the views again.
    if (defined.has(view)) {
      mark.run(0, view, 0);
      continue;
    }
    if (drop) {
      dropView(db, view);
      warn?.(`dropped view ${view}: it is no longer in the views file (--drop-removed-views)`);
    } else {
      mark.run(1, view, 1);
      warn?.(`kept view ${view} as it stands, no longer updated: it is no longer in the views file; run the sink once with --drop-removed-views to drop it`);
    }
  }
}

/**
 * Swaps in the version of `view` built in `shadowFile`, in one transaction of `db`: the live version's
 * tables are dropped, the new version's tables (with their indexes and triggers) made and filled from
 * the shadow, and its positions and record take the old ones' place. A reader sees the old version or
 * the new one, never a part. The shadow is left as it is (the caller forgets the view there).
 */
export function swapIn(db: SqliteDatabase, dbFile: string, shadowFile: string, view: ViewDefinition | { kind: 'events'; table: string }, hash: string): void {
  db.prepare('ATTACH DATABASE ? AS cqp_shadow').run(shadowFile);
  try {
    db.transaction(() => {
      const fresh = tablesOf(db, view.table, 'cqp_shadow');
      const shadowHash = db.prepare('SELECT definition_hash FROM cqp_shadow.cqp_views WHERE view = ?').pluck().get(view.table);
      if (shadowHash !== hash) throw new CqpError('STAGE', `view ${view.table}: the version built beside it in ${shadowFile} is of another definition`);
      const old = tablesOf(db, view.table);
      for (const t of old) db.exec(`DROP TABLE IF EXISTS main.${q(t)}`);
      const taken = userTables(db);
      for (const t of fresh) if (taken.has(t)) throw notOurs(t, dbFile);
      const objects = db
        .prepare("SELECT type, name, tbl_name AS tbl, sql FROM cqp_shadow.sqlite_master WHERE sql IS NOT NULL AND type IN ('table', 'index', 'trigger') ORDER BY rowid")
        .all() as Array<{ type: string; name: string; tbl: string; sql: string }>;
      const mine = objects.filter((o) => fresh.includes(o.tbl));
      // Tables first and filled, then their indexes and triggers (built once over the rows, not row by row).
      for (const o of mine) if (o.type === 'table') db.exec(o.sql);
      for (const t of fresh) db.exec(`INSERT INTO main.${q(t)} SELECT * FROM cqp_shadow.${q(t)}`);
      for (const o of mine) if (o.type !== 'table') db.exec(o.sql);
      db.prepare('DELETE FROM main.cqp_positions WHERE view = ?').run(view.table);
      db.prepare('INSERT INTO main.cqp_positions (view, source, n) SELECT view, source, n FROM cqp_shadow.cqp_positions WHERE view = ?').run(view.table);
      recordVersion(db, 'main', view, hash, fresh);
    }).immediate();
  } finally {
    db.exec('DETACH DATABASE cqp_shadow');
  }
}

/** Records in `schema` (main, or an attached database) which version of `view` is there: its hash, tables and definition. */
export function recordVersion(db: SqliteDatabase, schema: string, view: { kind: string; table: string }, hash: string, tables: string[]): void {
  db.prepare(`INSERT OR REPLACE INTO ${schema}.cqp_views (view, definition_hash, tables, definition) VALUES (?, ?, ?, ?)`).run(view.table, hash, JSON.stringify(tables), storedDefinition(view));
}
