/**
 * The versions of a view in a PostgreSQL schema: what cqp_views records of each, which changed or new
 * views are built beside the live ones, the swap that renames a version built beside into the live
 * one's place, and views no longer in the views file.
 *
 * A version built beside view V lives in the same schema under version names: its tables carry the
 * prefix `cqp_next_` (V's table is `cqp_next_V`), and its positions and record are those of view
 * `cqp_next_V`. The swap is one transaction: V's tables dropped, the new ones renamed (their indexes
 * with them), the positions and record moved to V. A reader sees the old version or the new one.
 */
import { CqpError } from '../core/errors.js';
import { minimumPositions, type PositionMap } from '../core/position.js';
import { viewHash, type ColumnViewDefinition, type ViewDefinition } from './definition.js';
import { connect, disconnect, q, type PgClient } from './pg-connection.js';
import type { PgViewStore } from './pg-store.js';
import type { ShadowStore } from './rebuild.js';
import { EVENTS_VIEW, type BadEventHandler, type ViewEvent } from './store.js';
import { storedDefinition, type StoredHandler } from './versions.js';

/** Records in `schema` (quoted) which version of `view` is there: its definition's hash, tables and definition. */
async function recordVersion(client: PgClient, schema: string, view: string, hash: string, tables: string, definition: string | null): Promise<void> {
  await client.query(
    `INSERT INTO ${schema}.cqp_views (view, definition_hash, tables, definition) VALUES ($1, $2, $3, $4) ` +
      'ON CONFLICT (view) DO UPDATE SET definition_hash = excluded.definition_hash, tables = excluded.tables, definition = excluded.definition',
    [view, hash, tables, definition],
  );
}

/**
 * Where a handler view's version is built beside the live one: a schema of its own next to the views'
 * (the module's init() creates tables of its choosing, by the live version's names), from which the
 * swap moves its tables into the views' schema.
 */
export function sideSchema(schema: string): string {
  return `${schema}_cqp_next`;
}

/** The prefix of the tables, positions and record of a version built beside the live one. */
export const NEXT = 'cqp_next_';
/** The definition hash of the events table (no views file). */
export const EVENTS_HASH = 'events-table-pg-v1';
/** PostgreSQL's longest identifier, in bytes (a longer one is cut short). */
const MAX_IDENTIFIER = 63;

export interface PgViewRow {
  view: string;
  definition_hash: string;
  tables: string[];
  definition: string | null;
}

export type PgViewState = 'current' | 'changed' | 'new';

/** How a schema treats each defined view: maintained as it is, built in place from empty, or built beside. */
export interface PgViewPlan {
  state: PgViewState;
  /** Built beside its live version (or beside the live views), then swapped in. */
  beside: boolean;
  /** The live version's definition (a handler's with its module's text), when it can be kept up to date until the swap. */
  previous: ColumnViewDefinition | StoredHandler | undefined;
}

/** The tables of a schema besides cqp's records (the versions being built beside included). */
export async function userTables(client: PgClient, schema: string): Promise<Set<string>> {
  const r = await client.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 AND table_name NOT IN ('cqp_positions', 'cqp_views')", [schema]);
  return new Set(r.rows.map((x) => x.t));
}

/** What cqp_views records (a schema made by an older cqp has no definitions). */
export async function viewRows(client: PgClient, schema: string): Promise<Map<string, PgViewRow>> {
  const r = await client.query<PgViewRow>(`SELECT * FROM ${q(schema)}.cqp_views`);
  return new Map(r.rows.map((row) => [row.view, { ...row, definition: row.definition ?? null }]));
}

/** A view's version built beside it: its definition under the version's table name. */
export function nextVersion(view: ColumnViewDefinition): ColumnViewDefinition {
  return { ...view, table: `${NEXT}${view.table}` };
}

/**
 * Each view's plan. `beside`: the sink follows a log it can build from; a view redefined, or one added
 * beside live views, is then built beside (a columns view whose version name PostgreSQL cannot hold is
 * rebuilt in place).
 */
export function planViews(views: ViewDefinition[], hashes: string[], rows: Map<string, PgViewRow>, existing: Set<string>, beside: boolean): PgViewPlan[] {
  const states = views.map((view, i): PgViewState => {
    const row = rows.get(view.table);
    if (row === undefined || !row.tables.every((t) => existing.has(t))) return 'new';
    return row.definition_hash === hashes[i] ? 'current' : 'changed';
  });
  const anyLive = states.some((s) => s !== 'new');
  return views.map((view, i) => {
    const state = states[i] as PgViewState;
    const fits = view.kind === 'handler' || (view.kind === 'columns' && Buffer.byteLength(`${NEXT}${view.table}`) <= MAX_IDENTIFIER);
    const by = beside && fits && (state === 'changed' || (state === 'new' && anyLive));
    const stored = by && state === 'changed' ? rows.get(view.table)?.definition : null;
    const previous = typeof stored === 'string' ? (JSON.parse(stored) as ColumnViewDefinition | StoredHandler) : undefined;
    return { state, beside: by, previous };
  });
}

/** Drops a view's tables, positions and record (inside the caller's transaction, if any). */
export async function dropPgView(client: PgClient, schema: string, view: string, tables: string[]): Promise<void> {
  for (const t of tables) await client.query(`DROP TABLE IF EXISTS ${q(schema)}.${q(t)} CASCADE`);
  await client.query(`DELETE FROM ${q(schema)}.cqp_positions WHERE view = $1`, [view]);
  await client.query(`DELETE FROM ${q(schema)}.cqp_views WHERE view = $1`, [view]);
}

/**
 * Views recorded in the schema but no longer defined: kept as they are (no longer updated) unless
 * `drop`. Versions built beside a view no longer being built (`building`: the tables of those that are)
 * are dropped: they were never served.
 */
export async function removedPgViews(
  client: PgClient,
  schema: string,
  defined: Set<string>,
  building: Set<string>,
  drop: boolean,
  warn: (message: string) => void,
): Promise<void> {
  for (const row of [...(await viewRows(client, schema)).values()].sort((a, b) => a.view.localeCompare(b.view))) {
    if (defined.has(row.view) || building.has(row.view)) continue;
    if (row.view.startsWith(NEXT)) {
      await dropPgView(client, schema, row.view, row.tables);
    } else if (drop) {
      await dropPgView(client, schema, row.view, row.tables);
      warn(`dropped view ${row.view}: it is no longer in the views file (--drop-removed-views)`);
    } else {
      warn(`kept view ${row.view} as it stands, no longer updated: it is no longer in the views file; run the sink once with --drop-removed-views to drop it`);
    }
  }
}

/**
 * Swaps the version of `view` built beside it in for the live one, in one transaction on `client`: the
 * live version's tables dropped, the new version's renamed into their place (their indexes with them),
 * its positions and record made the view's. `where` names the schema in errors.
 */
export async function swapInPg(client: PgClient, schema: string, view: ColumnViewDefinition, hash: string, nextHash: string, where: string): Promise<void> {
  const next = nextVersion(view).table;
  const s = q(schema);
  await client.query('BEGIN');
  try {
    const rows = await viewRows(client, schema);
    const built = rows.get(next);
    if (built?.definition_hash !== nextHash) throw new CqpError('STAGE', `view ${view.table}: the version built beside it in ${where} is of another definition`);
    for (const t of rows.get(view.table)?.tables ?? []) await client.query(`DROP TABLE IF EXISTS ${s}.${q(t)} CASCADE`);
    const taken = await userTables(client, schema);
    const tables: string[] = [];
    for (const t of built.tables) {
      const name = t.startsWith(NEXT) ? t.slice(NEXT.length) : t;
      if (taken.has(name)) throw new CqpError('CONFIG', `table "${name}" already exists in ${where} and is not a view cqp built; choose another table name, or drop that table`);
      await client.query(`ALTER TABLE ${s}.${q(t)} RENAME TO ${q(name)}`);
      // The indexes (the primary key's included) are named after the table: they follow it.
      const indexes = await client.query<{ name: string }>('SELECT indexname AS name FROM pg_indexes WHERE schemaname = $1 AND tablename = $2', [schema, name]);
      for (const { name: index } of indexes.rows) {
        if (index.startsWith(NEXT)) await client.query(`ALTER INDEX ${s}.${q(index)} RENAME TO ${q(index.slice(NEXT.length))}`);
      }
      tables.push(name);
    }
    await client.query(`DELETE FROM ${s}.cqp_positions WHERE view = $1`, [view.table]);
    await client.query(`UPDATE ${s}.cqp_positions SET view = $1 WHERE view = $2`, [view.table, next]);
    await client.query(`DELETE FROM ${s}.cqp_views WHERE view = $1`, [next]);
    await recordVersion(client, s, view.table, hash, JSON.stringify(tables), storedDefinition(view));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** The versions being built beside the live views, named as the views they will become. */
export class PgShadow implements ShadowStore {
  /** Each store, with the prefix its names carry beyond the views' own. */
  constructor(private readonly parts: Array<{ store: PgViewStore; prefix: string }>) {}

  private partOf(view: string): { store: PgViewStore; name: string } | undefined {
    for (const { store, prefix } of this.parts) if (store.views.includes(`${prefix}${view}`)) return { store, name: `${prefix}${view}` };
    return undefined;
  }

  get views(): string[] {
    return this.parts.flatMap(({ store, prefix }) => store.views.map((v) => v.slice(prefix.length)));
  }

  applied(): PositionMap {
    return minimumPositions(this.parts.filter((p) => p.store.views.length > 0).map((p) => p.store.applied()));
  }

  appliedBy(view: string): PositionMap {
    const part = this.partOf(view);
    return part === undefined ? {} : part.store.appliedBy(part.name);
  }

  async applyBatch(items: ViewEvent[], onBad: BadEventHandler, through?: PositionMap): Promise<void> {
    for (const { store } of this.parts) if (store.views.length > 0) await store.applyBatch(items, onBad, through);
  }

  forget(view: string): void {
    const part = this.partOf(view);
    part?.store.forget(part.name);
  }

  async close(): Promise<void> {
    for (const { store } of this.parts) await store.close();
  }
}

/**
 * The positions a schema holds for these views, as `PgViewStore.applied()` would give, read without
 * its lock: a supervisor resumes its source after them. A schema or view not built yet, or built from
 * another definition, holds nothing. `beside` (a sink following a log, see PgStoreOptions.beside): a
 * view whose live version is kept up to date while a new one is built holds what that version holds,
 * and views built beside the live ones are left out, as the sink leaves them out.
 */
export async function readPgViewsApplied(url: string, schema: string, views: ViewDefinition[] | undefined, beside = false): Promise<PositionMap> {
  const client = await connect(url, 'positions');
  try {
    const names = views === undefined ? [EVENTS_VIEW] : views.map((v) => v.table);
    const hashes = views === undefined ? [EVENTS_HASH] : views.map(viewHash);
    const meta = await client.query<{ c: string }>(
      "SELECT count(*)::text AS c FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ('cqp_views', 'cqp_positions')",
      [schema],
    );
    if (meta.rows[0]?.c !== '2') return {};
    const rows = await viewRows(client, schema);
    const plans = views === undefined ? undefined : planViews(views, hashes, rows, await userTables(client, schema), beside);
    const positions = (await client.query<{ view: string; source: string; n: string }>(`SELECT view, source, n FROM ${q(schema)}.cqp_positions`)).rows;
    const maps: PositionMap[] = [];
    for (const [i, name] of names.entries()) {
      const plan = plans?.[i];
      const map: PositionMap = {};
      const current = plan === undefined ? rows.get(name)?.definition_hash === hashes[i] : plan.state === 'current';
      if (current || plan?.previous !== undefined) {
        for (const row of positions) if (row.view === name) map[row.source] = row.n;
      } else if (plan?.beside === true) {
        continue;
      }
      maps.push(map);
    }
    return minimumPositions(maps);
  } finally {
    await disconnect(client);
  }
}

/** Builds a view from empty (`create` makes its tables) unless its stored definition matches; `notOurs`: the error for a table cqp did not make. */
export async function buildPgView(
  client: PgClient,
  schema: string,
  view: string,
  hash: string,
  create: () => Promise<void>,
  definition: ViewDefinition | undefined,
  notOurs: () => Error,
): Promise<void> {
  const row = (await client.query<{ definition_hash: string; tables: string[] }>(`SELECT definition_hash, tables FROM ${q(schema)}.cqp_views WHERE view = $1`, [view])).rows[0];
  const existing = await userTables(client, schema);
  const tables = row?.tables ?? [];
  if (row && row.definition_hash === hash && tables.every((t) => existing.has(t))) return;
  await client.query('BEGIN');
  try {
    for (const t of tables) await client.query(`DROP TABLE IF EXISTS ${q(schema)}.${q(t)} CASCADE`);
    const before = await userTables(client, schema);
    if (!row && before.has(view)) throw notOurs();
    await create();
    const made = [...(await userTables(client, schema))].filter((t) => !before.has(t));
    await client.query(`DELETE FROM ${q(schema)}.cqp_positions WHERE view = $1`, [view]);
    await recordVersion(client, q(schema), view, hash, JSON.stringify(made), definition === undefined ? null : storedDefinition(definition));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * Swaps the version of handler view `view` built in the side schema in for the live one, in one
 * transaction: the live version's tables dropped, the new version's moved into the views' schema (their
 * indexes, constraints and sequences with them), its positions and record made the view's there.
 */
export async function swapInPgSide(client: PgClient, schema: string, view: ViewDefinition, hash: string, where: string): Promise<void> {
  const side = sideSchema(schema);
  const s = q(schema);
  await client.query('BEGIN');
  try {
    const built = (await viewRows(client, side)).get(view.table);
    if (built?.definition_hash !== hash) throw new CqpError('STAGE', `view ${view.table}: the version built beside it in ${where} is of another definition`);
    for (const t of (await viewRows(client, schema)).get(view.table)?.tables ?? []) await client.query(`DROP TABLE IF EXISTS ${s}.${q(t)} CASCADE`);
    const taken = await userTables(client, schema);
    for (const t of built.tables) {
      if (taken.has(t)) throw new CqpError('CONFIG', `table "${t}" already exists in ${where} and is not a view cqp built; choose another table name, or drop that table`);
      await client.query(`ALTER TABLE ${q(side)}.${q(t)} SET SCHEMA ${s}`);
    }
    await client.query(`DELETE FROM ${s}.cqp_positions WHERE view = $1`, [view.table]);
    await client.query(`INSERT INTO ${s}.cqp_positions (view, source, n) SELECT view, source, n FROM ${q(side)}.cqp_positions WHERE view = $1`, [view.table]);
    await client.query(`DELETE FROM ${q(side)}.cqp_positions WHERE view = $1`, [view.table]);
    await client.query(`DELETE FROM ${q(side)}.cqp_views WHERE view = $1`, [view.table]);
    await recordVersion(client, s, view.table, hash, JSON.stringify(built.tables), storedDefinition(view));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
