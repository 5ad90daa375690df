import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';

/**
 * Every row of every view table in a database, in key order (cqp's own `_cqp…` tables left out): two
 * databases with equal dumps hold the same views.
 */
export function dumpViews(db: string): Record<string, unknown[]> {
  const d = new Database(db, { readonly: true });
  try {
    const tables = d.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_cqp%' ESCAPE '\\' ORDER BY name").all() as Array<{ name: string }>;
    return Object.fromEntries(tables.map(({ name }) => [name, d.prepare(`SELECT * FROM "${name}" ORDER BY 1`).all()]));
  } finally {
    d.close();
  }
}

/** The highest position a database being built holds (0 before it has one, or while it cannot be read). */
export function appliedIn(db: string): number {
  if (!existsSync(db)) return 0;
  try {
    const conn = new Database(db, { readonly: true, fileMustExist: true });
    try {
      const row = conn.prepare('SELECT max(CAST(n AS INTEGER)) AS n FROM cqp_positions').get() as { n: number | null } | undefined;
      return row?.n ?? 0;
    } finally {
      conn.close();
    }
  } catch {
    return 0;
  }
}
