/**
 * What a PostgreSQL views store does when it opens, under the schema's setup lock: each view's
 * projection (a handler's module loaded), then, against what the schema records, the views current as
 * they are, those built (again) in place, those left to build beside their live version (kept up to
 * date meanwhile from its stored definition), and those no longer in the views file.
 */
import { messageOf, type CqpError } from '../core/errors.js';
import { viewHash } from './definition.js';
import type { ColumnViewDefinition, ViewDefinition } from './definition.js';
import { q, withSetupLock, type PgClient } from './pg-connection.js';
import { ColumnProjection, EventsProjection } from './pg-fold.js';
import { HandlerProjection, type PgHandler } from './pg-handler.js';
import { columnTableSql, eventsTableSql } from './pg-sql.js';
import type { PgStoreOptions } from './pg-store.js';
import type { Projection } from './pg-transaction.js';
import { buildPgView, EVENTS_HASH, NEXT, planViews, removedPgViews, sideSchema, userTables, viewRows } from './pg-versions.js';
import { loadPreviousHandler } from './projections.js';
import { loadHandler, type PendingView } from './store.js';
import type { StoredHandler } from './versions.js';

/** The projections of the defined views (the events table without a views file), each with its definition hash. */
export interface DefinedViews {
  projections: Projection[];
  hashes: string[];
  /** The handler projections, by index, whose init() makes their tables. */
  inits: Array<HandlerProjection | undefined>;
}

/** Makes the projection of each view of `views` (loading handler modules); without views, the events table's. */
export async function definedViews(schema: string, views: ViewDefinition[] | undefined): Promise<DefinedViews> {
  const projections: Projection[] = [];
  const hashes: string[] = [];
  const inits: Array<HandlerProjection | undefined> = [];
  if (views === undefined) {
    projections.push(new EventsProjection(schema));
    hashes.push(EVENTS_HASH);
    inits.push(undefined);
  } else {
    for (const view of views) {
      const hash = viewHash(view);
      hashes.push(hash);
      if (view.kind === 'columns') {
        projections.push(new ColumnProjection(schema, view));
        inits.push(undefined);
      } else {
        const p = new HandlerProjection(view, (await loadHandler(view, hash)) as unknown as PgHandler);
        projections.push(p);
        inits.push(p);
      }
    }
  }
  return { projections, hashes, inits };
}

/** The live version of a changed view, kept up to date from its stored definition; undefined when it has none usable. */
async function previousVersion(schema: string, old: ColumnViewDefinition | StoredHandler | undefined, hash: string, warn: (message: string) => void): Promise<Projection | undefined> {
  if (old === undefined) return undefined;
  if (old.kind === 'columns') return new ColumnProjection(schema, old);
  try {
    return new HandlerProjection(old, (await loadPreviousHandler(old, old.source, hash)) as unknown as PgHandler);
  } catch (error) {
    warn(`${messageOf(error)}; its live version is served as it stands until the new one takes its place`);
    return undefined;
  }
}

/**
 * Under the schema's setup lock, brings its views to `defined`: a current view is kept, a new or
 * changed one built in place or (`options.beside`) left pending, to build beside its live version, and
 * a view no longer defined kept or dropped. Gives the projections to maintain and the views pending.
 */
export async function setUpViews(
  client: PgClient,
  options: PgStoreOptions,
  defined: DefinedViews,
  notOurs: (table: string) => CqpError,
): Promise<{ projections: Projection[]; pending: PendingView[] }> {
  const { schema, views } = options;
  const { hashes, inits } = defined;
  const projections: Projection[] = [];
  const pending: PendingView[] = [];
  await withSetupLock(client, schema, async () => {
    const rows = await viewRows(client, schema);
    const existing = await userTables(client, schema);
    const plans = views === undefined ? [] : planViews(views, hashes, rows, existing, options.beside === true);
    for (const [i, p] of defined.projections.entries()) {
      const view = views?.[i];
      const plan = plans[i];
      if (view !== undefined && plan?.beside === true) {
        if (plan.state === 'new' && existing.has(view.table)) throw notOurs(view.table);
        // The live version goes on from its stored definition; one that has none is served as it stands.
        const previous = await previousVersion(schema, plan.previous, rows.get(view.table)?.definition_hash ?? '', options.warn);
        if (previous !== undefined) projections.push(previous);
        pending.push({ definition: view, hash: hashes[i] as string, reason: plan.state === 'new' ? 'new' : 'changed', frozen: plan.state === 'changed' && previous === undefined });
        continue;
      }
      if (view !== undefined && plan?.state === 'changed' && options.shadow !== true) {
        const why =
          options.beside === true
            ? `its name is too long for the name of a version beside it (${NEXT}${view.table})`
            : (options.inPlaceWhy ?? 'only a sink that reads a command log as it follows it (--read-log --follow, as under cqp run beside a log) builds a new version beside the live one');
        options.warn(`rebuilding ${view.table} in place, from empty (definition changed): readers see it refill; ${why}`);
      }
      const create = async (): Promise<void> => {
        if (view === undefined) for (const sql of eventsTableSql(schema)) await client.query(sql);
        else if (view.kind === 'columns') await client.query(columnTableSql(schema, view));
        else await (inits[i] as HandlerProjection).init(client);
      };
      await buildPgView(client, schema, p.name, hashes[i] as string, create, view, () => notOurs(p.name));
      projections.push(p);
    }
    if (views !== undefined && options.shadow !== true) {
      // What a handler view's build beside left, once none is built.
      if (!pending.some((p) => p.definition.kind === 'handler')) await client.query(`DROP SCHEMA IF EXISTS ${q(sideSchema(schema))} CASCADE`);
      const building = new Set(pending.map((p) => `${NEXT}${p.definition.table}`));
      await removedPgViews(client, schema, new Set(views.map((v) => v.table)), building, options.dropRemoved === true, options.warn);
    }
  });
  return { projections, pending };
}
