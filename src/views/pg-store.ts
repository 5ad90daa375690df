/**
 * PostgreSQL query views: the same views files as the SQLite store (same actions, same column paths),
 * written set-based (see pg-fold.ts). Each batch is one transaction: BEGIN with the views' positions
 * read inside it, then the batch's writes, the new positions and COMMIT in one round trip, so every
 * event applies once across crashes and reconnections. One writer per schema (an advisory lock held for
 * the store's life). A lost connection is retried with backoff; the batch is only acknowledged once
 * committed, and a retry skips whatever the commit it could not confirm did apply.
 */
import type pg from 'pg';
import { backoffMs, sleep } from '../core/backoff.js';
import { CqpError, messageOf } from '../core/errors.js';
import { compareN, hasParts, holds, isApplied, minimumPositions } from '../core/position.js';
import type { PositionMap } from '../core/position.js';
import { viewHash } from './definition.js';
import type { ViewDefinition } from './definition.js';
import { connect, describeUrl, disconnect, isConnectionError, lockSchema, q, withSetupLock, type PgClient } from './pg-connection.js';
import { ColumnProjection, EventsProjection } from './pg-fold.js';
import { HandlerProjection, type PgHandler } from './pg-handler.js';
import { columnTableSql, eventsTableSql, metaSql, POSITIONS_MOVED, positionsGuardSql, positionsSelectSql, positionsUpsertSql } from './pg-sql.js';
import { PgTransaction, type Projection } from './pg-transaction.js';
import { compareFast, EVENTS_VIEW, loadHandler, positionRanges, type BadEventHandler, type ViewEvent } from './store.js';

/** SQLSTATEs of a transaction PostgreSQL picked to fail between concurrent writers (a group's workers): retried. */
const DEADLOCK = '40P01';
const SERIALIZATION = '40001';

/** The definition hash of the events table (no views file). */
const EVENTS_HASH = 'events-table-pg-v1';

async function userTables(client: PgClient, schema: string): Promise<Set<string>> {
  const r = await client.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 AND table_name NOT LIKE 'cqp\\_%'", [schema]);
  return new Set(r.rows.map((x) => x.t));
}

/** What `PgViewStore.open` needs: where, which views, and where to say it is retrying. */
export interface PgStoreOptions {
  url: string;
  schema: string;
  views: ViewDefinition[] | undefined;
  warn(message: string): void;
  signal?: AbortSignal | undefined;
  /** Who writes, as the connection names itself (`sink postgres`, `replay`). */
  role?: string;
  /**
   * The group of workers writing this schema together, each for the partitions it holds: the schema's
   * lock is then shared, and a batch is fenced (refused) when another worker has committed for one of
   * its sources since this store last saw it, unless the batch starts at the stored position or past it.
   */
  group?: string | undefined;
}

/** PostgreSQL query views kept in one schema; see the top of this file. */
export class PgViewStore {
  private client: PgClient | undefined;
  private lost = false;
  /** The views' positions in memory are those stored: read on this connection or committed by it since. */
  private known = false;
  private readonly where: string;

  private constructor(
    private readonly options: PgStoreOptions,
    private readonly projections: Projection[],
    private readonly hashes: string[],
  ) {
    this.where = `PostgreSQL ${describeUrl(options.url)}, schema "${options.schema}"`;
  }

  /** Connects (a clear error when the server cannot be reached), takes the schema's writer lock and builds new or changed views. */
  static async open(options: PgStoreOptions): Promise<PgViewStore> {
    const { schema, views } = options;
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
    const store = new PgViewStore(options, projections, hashes);
    await store.connect();
    try {
      const client = store.client as PgClient;
      await withSetupLock(client, schema, async () => {
        for (const [i, p] of projections.entries()) {
          const view = views?.[i];
          const create = async (): Promise<void> => {
            if (view === undefined) for (const sql of eventsTableSql(schema)) await client.query(sql);
            else if (view.kind === 'columns') await client.query(columnTableSql(schema, view));
            else await (inits[i] as HandlerProjection).init(client);
          };
          await store.build(p.name, hashes[i] as string, create);
        }
      });
      await store.readPositions(client);
    } catch (error) {
      await store.close();
      throw error;
    }
    return store;
  }

  private async connect(): Promise<void> {
    this.lost = false;
    this.known = false;
    const client = await connect(this.options.url, this.options.role ?? 'sink postgres', () => {
      this.lost = true;
    });
    try {
      await lockSchema(client, this.options.url, this.options.schema, this.options.group !== undefined);
      await client.query(`SET search_path TO ${q(this.options.schema)}, public`).catch(() => undefined);
      await withSetupLock(client, this.options.schema, async () => {
        for (const sql of metaSql(this.options.schema)) await client.query(sql);
      });
      await client.query(`SET search_path TO ${q(this.options.schema)}, public`);
    } catch (error) {
      await disconnect(client);
      throw error;
    }
    this.client = client;
  }

  /** Builds a view from empty unless its stored definition matches. */
  private async build(view: string, hash: string, create: () => Promise<void>): Promise<void> {
    const client = this.client as PgClient;
    const { schema } = this.options;
    const row = (await client.query<{ definition_hash: string; tables: string[] }>(`SELECT definition_hash, tables FROM ${q(schema)}.cqp_views WHERE view = $1`, [view])).rows[0];
    const existing = await userTables(client, schema);
    const tables = row?.tables ?? [];
    if (row && row.definition_hash === hash && tables.every((t) => existing.has(t))) return;
    await client.query('BEGIN');
    try {
      for (const t of tables) await client.query(`DROP TABLE IF EXISTS ${q(schema)}.${q(t)} CASCADE`);
      const before = await userTables(client, schema);
      if (!row && before.has(view)) {
        throw new CqpError('CONFIG', `table "${view}" already exists in ${this.where} and is not a view cqp built; choose another table name, or drop that table`);
      }
      await create();
      const made = [...(await userTables(client, schema))].filter((t) => !before.has(t));
      await client.query(`DELETE FROM ${q(schema)}.cqp_positions WHERE view = $1`, [view]);
      await client.query(
        `INSERT INTO ${q(schema)}.cqp_views (view, definition_hash, tables) VALUES ($1, $2, $3) ON CONFLICT (view) DO UPDATE SET definition_hash = excluded.definition_hash, tables = excluded.tables`,
        [view, hash, JSON.stringify(made)],
      );
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }

  /** Reads every view's positions; with `begin`, the batch's transaction is opened in the same round trip. */
  private async readPositions(client: PgClient, begin = false): Promise<void> {
    const byView = new Map<string, PositionMap>(this.projections.map((p) => [p.name, {}]));
    const select = positionsSelectSql(this.options.schema);
    const results = (await client.query(begin ? `BEGIN; ${select}` : select)) as unknown as pg.QueryResult | pg.QueryResult[];
    const rows = (Array.isArray(results) ? results[results.length - 1] : results) as pg.QueryResult<{ view: string; source: string; n: string }>;
    for (const row of rows.rows) {
      const map = byView.get(row.view);
      if (map !== undefined) map[row.source] = row.n;
    }
    for (const p of this.projections) p.applied = byView.get(p.name) as PositionMap;
    this.known = true;
  }

  /** Opens the batch's transaction: with the positions in memory of its sources checked inside it (no round trip), else read. */
  private async begin(client: PgClient, sources: string[]): Promise<{ tx: PgTransaction; read: boolean }> {
    const tx = new PgTransaction(client);
    const guard = this.known ? this.guard(sources) : undefined;
    if (guard === undefined) await this.readPositions(client, true);
    else {
      tx.add('BEGIN');
      tx.add(guard);
    }
    return { tx, read: guard === undefined };
  }

  private guard(sources: string[]): string | undefined {
    const expected: Record<string, PositionMap> = {};
    for (const p of this.projections) {
      const mine: PositionMap = {};
      for (const source of sources) if (p.applied[source] !== undefined) mine[source] = p.applied[source];
      if (Object.keys(mine).length > 0) expected[p.name] = mine;
    }
    return positionsGuardSql(this.options.schema, this.views, sources, expected);
  }

  get views(): string[] {
    return this.projections.map((p) => p.name);
  }

  /** Per source, the smallest position every view holds. */
  applied(): PositionMap {
    return minimumPositions(this.projections.map((p) => p.applied));
  }

  /**
   * Applies a batch in one transaction with the views' new positions. A lost connection is retried
   * with backoff (reconnecting, retaking the lock) until it succeeds or the sink is stopped; the
   * positions read again inside the retried transaction skip what a commit that could not be confirmed
   * did apply.
   */
  async applyBatch(items: ViewEvent[], onBad: BadEventHandler, through?: PositionMap): Promise<void> {
    if (items.length === 0 && through === undefined) return;
    // A batch written again after a lost connection reports each of its bad events once.
    const reported = new Set<string>();
    const once: BadEventHandler = (index, message) => {
      const id = `${index}\0${message}`;
      if (reported.has(id)) return;
      reported.add(id);
      onBad(index, message);
    };
    // The positions this store last saw, before a failed guard or a retry made it read them again (a group's fence).
    const seen = this.projections.map((p) => ({ ...p.applied }));
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.client === undefined || this.lost) {
          await disconnect(this.client);
          this.client = undefined;
          await this.connect();
          this.options.warn(`cqp: ${this.where}: connected again; writing the batch`);
        }
        await this.transaction(this.client as PgClient, items, once, through, seen);
        return;
      } catch (error) {
        this.known = false;
        const code = (error as { code?: unknown }).code;
        if (code === POSITIONS_MOVED && !this.lost) {
          // Not the positions the batch was folded against (never so for a writer alone on the schema):
          // read them and fold again; in a group, first check that no other worker took over a source.
          await this.client?.query('ROLLBACK').catch(() => undefined);
          attempt--;
          continue;
        }
        if ((code === DEADLOCK || code === SERIALIZATION) && !this.lost && attempt < 20) {
          // Two workers of a group updating the same rows in another order: one of them is picked to retry.
          await this.client?.query('ROLLBACK').catch(() => undefined);
          await sleep(backoffMs(attempt, 20, 500));
          continue;
        }
        if (!isConnectionError(error)) {
          if (this.client && !this.lost) await this.client.query('ROLLBACK').catch(() => undefined);
          throw storageError(this.where, error);
        }
        this.lost = true;
        const delay = backoffMs(attempt, 200, 5000);
        this.options.warn(`cqp: ${this.where}: ${messageOf(error) || 'connection lost'}; retrying in ${(delay / 1000).toFixed(1)} s (nothing of this batch is acknowledged until it is committed)`);
        if (!(await sleep(delay, this.options.signal))) {
          throw new CqpError('IO', `${this.where}: stopped while the server could not be reached; the batch was not committed and is read again on the next start`, { cause: error });
        }
      }
    }
  }

  private async transaction(client: PgClient, items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined, seen: PositionMap[]): Promise<void> {
    const ranges = positionRanges(items);
    const first = new Map([...ranges].map(([source, range]) => [source, range.min]));
    for (const source in through) {
      const n = through[source] as string;
      const range = ranges.get(source);
      if (range === undefined) ranges.set(source, { min: n, max: n });
      else if (compareFast(n, range.max) > 0) range.max = n;
    }
    const { tx, read } = await this.begin(client, [...ranges.keys()]);
    // Positions read in this transaction (not checked by the guard): in a group, another worker may have moved them.
    if (this.options.group !== undefined && read) await this.fence(client, seen, first);
    const moved: PositionMap[] = [];
    const rows: Array<[string, string, string]> = [];
    for (const p of this.projections) {
      let check = false;
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && (compareFast(last, range.min) >= 0 || holds(last, range.min))) check = true;
        // Positions kept per part of a source: isApplied places the whole source's events, or refuses them.
        if (hasParts(p.applied, source)) check = true;
      }
      const todo: number[] = [];
      for (let i = 0; i < items.length; i++) {
        const position = (items[i] as ViewEvent).position;
        if (check && position !== undefined && isApplied(p.applied, position)) continue;
        todo.push(i);
      }
      if (todo.length > 0) await p.apply(tx, items, todo, onBad);
      const m: PositionMap = {};
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && compareFast(range.max, last) <= 0) continue;
        m[source] = range.max;
        rows.push([p.name, source, range.max]);
      }
      moved.push(m);
    }
    // The views' writes still held, the positions and the COMMIT: one round trip.
    await tx.commit(rows.length === 0 ? undefined : positionsUpsertSql(this.options.schema, rows));
    this.projections.forEach((p, v) => Object.assign(p.applied, moved[v]));
  }

  /**
   * A group's fence, with the stored positions just read inside the batch's transaction: a source whose
   * stored position another worker moved since this store saw it is no longer this worker's, unless
   * the batch starts at that position or past it (the source took it over from there). Such a batch is rolled back,
   * and the store stops: it is restarted and resumes from the stored positions.
   */
  private async fence(client: PgClient, seen: PositionMap[], first: Map<string, string>): Promise<void> {
    for (const [v, p] of this.projections.entries()) {
      for (const [source, n] of first) {
        const stored = p.applied[source];
        const before = seen[v]?.[source];
        if (stored === undefined || stored === before) continue;
        // A batch starting at the stored position, or past it, comes from a reader that started there: a
        // worker taking a partition reads it again from the stored event, which a stage may drop (a
        // \`where\` changed by a reload). A reader that lost the partition goes on from where this store
        // stood, before the stored position: the events up to it passed the same stages for the worker
        // that committed them, so its batch holds them, and starts at or before it.
        if (compareN(n.split('.')[0] as string, stored.split('.')[0] as string) >= 0) continue;
        await client.query('ROLLBACK').catch(() => undefined);
        throw new CqpError(
          'FENCED',
          `${this.where}: fenced: another worker of group ${this.options.group ?? ''} has committed ${source} up to ${stored} since this one saw ${before ?? 'nothing'} of it ` +
            `(this worker lost that partition's lease); the batch from ${n} was rolled back, nothing of it applied`,
        );
      }
    }
  }

  /** The definition hash of each view, in order (replay compares them). */
  get definitionHashes(): string[] {
    return [...this.hashes];
  }

  /** Closes the connection, which gives up the schema's writer lock. */
  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await disconnect(client);
  }
}

/** A PostgreSQL error named with where it happened. */
function storageError(where: string, error: unknown): unknown {
  if (error instanceof CqpError) return error;
  const code = (error as { code?: unknown }).code;
  return new CqpError('IO', `${where}: ${messageOf(error)}${typeof code === 'string' ? ` (${code})` : ''} (the batch was rolled back)`, { cause: error });
}

/**
 * The positions a schema holds for these views, as `PgViewStore.applied()` would give, read without
 * its lock: a supervisor resumes its source after them. A schema or view not built yet, or built from
 * another definition, holds nothing.
 */
export async function readPgViewsApplied(url: string, schema: string, views: ViewDefinition[] | undefined): Promise<PositionMap> {
  const client = await connect(url, 'positions');
  try {
    const names = views === undefined ? [EVENTS_VIEW] : views.map((v) => v.table);
    const hashes = views === undefined ? [EVENTS_HASH] : views.map(viewHash);
    const meta = await client.query<{ c: string }>(
      "SELECT count(*)::text AS c FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ('cqp_views', 'cqp_positions')",
      [schema],
    );
    if (meta.rows[0]?.c !== '2') return {};
    const stored = new Map((await client.query<{ view: string; definition_hash: string }>(`SELECT view, definition_hash FROM ${q(schema)}.cqp_views`)).rows.map((r) => [r.view, r.definition_hash]));
    const positions = (await client.query<{ view: string; source: string; n: string }>(`SELECT view, source, n FROM ${q(schema)}.cqp_positions`)).rows;
    const maps = names.map((name, i) => {
      const map: PositionMap = {};
      if (stored.get(name) !== hashes[i]) return map;
      for (const row of positions) if (row.view === name) map[row.source] = row.n;
      return map;
    });
    return minimumPositions(maps);
  } finally {
    await disconnect(client);
  }
}
