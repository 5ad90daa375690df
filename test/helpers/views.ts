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
