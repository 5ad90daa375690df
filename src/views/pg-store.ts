/**
 * PostgreSQL query views: the same views files as the SQLite store (same actions, same column paths),
 * written set-based (see pg-fold.ts). Each batch is one transaction: BEGIN with the views' positions
 * read inside it, then the batch's writes, the new positions and COMMIT in one round trip, so every
 * event applies once across crashes and reconnections. One writer per schema (an advisory lock held for
 * the store's life). A lost connection is retried with backoff; the batch is only acknowledged once
 * committed, and a retry skips whatever the commit it could not confirm did apply. A changed view is
 * built beside its live version and swapped in (pg-versions.ts, rebuild.ts) when the sink follows a log.
 * This file holds the store: its connection, the retries and the swaps; what it does with the views
 * when it opens is in pg-view-setup.ts, a batch's transaction in pg-batch.ts.
 */
import type pg from 'pg';
import { backoffMs, sleep } from '../core/backoff.js';
import { CqpError, messageOf } from '../core/errors.js';
import { minimumPositions } from '../core/position.js';
import type { PositionMap } from '../core/position.js';
import { viewHash } from './definition.js';
import type { ColumnViewDefinition, HandlerViewDefinition, ViewDefinition } from './definition.js';
import { positionsGuard, raise, writeBatch, type BatchTarget } from './pg-batch.js';
import { connect, describeUrl, disconnect, isConnectionError, lockSchema, q, withSetupLock, type PgClient } from './pg-connection.js';
import { ColumnProjection } from './pg-fold.js';
import { HandlerProjection, type PgHandler } from './pg-handler.js';
import { metaSql, POSITIONS_MOVED, positionsSelectSql } from './pg-sql.js';
import { PgTransaction, type Projection } from './pg-transaction.js';
import { definedViews, setUpViews } from './pg-view-setup.js';
import { dropPgView, NEXT, nextVersion, PgShadow, sideSchema, swapInPg, swapInPgSide, viewRows } from './pg-versions.js';
import type { BesideStore, ShadowStore } from './rebuild.js';
import { EVENTS_VIEW, loadHandler, type BadEventHandler, type PendingView, type ViewEvent } from './store.js';

/** SQLSTATEs of a transaction PostgreSQL picked to fail between concurrent writers (a group's workers): retried. */
const DEADLOCK = '40P01';
const SERIALIZATION = '40001';

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
  /**
   * The sink follows a log it can build from: changed views (and views new beside live ones) are left as
   * they are (`pending`) and built beside the live ones (see rebuild.ts); otherwise rebuilt in place, from empty.
   */
  beside?: boolean | undefined;
  /** Why a changed view is rebuilt in place when the sink follows a log (said in the warning). */
  inPlaceWhy?: string | undefined;
  /** Drop the tables of views no longer in the views file (kept otherwise). */
  dropRemoved?: boolean | undefined;
  /** The versions built beside the live views, written on a connection of their own under the live store's writer lock. */
  shadow?: boolean | undefined;
  /** A schema whose tables the views' queries find after their own (a handler's version built beside reads the live views). */
  readsFrom?: string | undefined;
}

/** PostgreSQL query views kept in one schema; see the top of this file. */
export class PgViewStore implements BesideStore {
  private client: PgClient | undefined;
  /** Batches and swaps, one after another on the connection. */
  private queue: Promise<unknown> = Promise.resolve();
  private busy = 0;
  /** Per source, the largest position handed to any view so far (see `reach`). */
  private readonly reached: PositionMap = {};
  /** Views to build beside the live ones (see PgStoreOptions.beside); empty otherwise. */
  readonly pending: PendingView[] = [];
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
    const defined = await definedViews(schema, views);
    const store = new PgViewStore(options, [], defined.hashes);
    await store.connect();
    try {
      const client = store.client as PgClient;
      const { projections, pending } = await setUpViews(client, options, defined, (table) => store.notOurs(table));
      store.projections.push(...projections);
      store.pending.push(...pending);
      await store.readPositions(client);
      // What every defined view holds, a version served as it stands included: what was given to it before.
      const names = new Set(views === undefined ? [EVENTS_VIEW] : views.map((v) => v.table));
      for (const row of (await client.query<{ view: string; source: string; n: string }>(positionsSelectSql(schema))).rows) {
        if (names.has(row.view)) raise(store.reached, { [row.source]: row.n });
      }
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
      // The versions built beside are written under the live store's lock.
      if (this.options.shadow !== true) await lockSchema(client, this.options.url, this.options.schema, this.options.group !== undefined);
      const path = [this.options.schema, this.options.readsFrom, 'public'].filter((x): x is string => x !== undefined).map(q).join(', ');
      await client.query(`SET search_path TO ${path}`).catch(() => undefined);
      await withSetupLock(client, this.options.schema, async () => {
        for (const sql of metaSql(this.options.schema)) await client.query(sql);
      });
      await client.query(`SET search_path TO ${path}`);
    } catch (error) {
      await disconnect(client);
      throw error;
    }
    this.client = client;
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
    const guard = this.known ? positionsGuard(this.options.schema, this.projections, sources) : undefined;
    if (guard === undefined) await this.readPositions(client, true);
    else {
      tx.add('BEGIN');
      tx.add(guard);
    }
    return { tx, read: guard === undefined };
  }

  get views(): string[] {
    return this.projections.map((p) => p.name);
  }

  notOurs(table: string): CqpError {
    return new CqpError('CONFIG', `table "${table}" already exists in ${this.where} and is not a view cqp built; choose another table name, or drop that table`);
  }

  /** Runs `work` once the batches and swaps before it are done (one at a time on the connection). */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Milliseconds spent applying batches so far: how busy the live stream keeps this store. */
  get busyMs(): number {
    return this.busy;
  }

  /**
   * Per source, the largest position handed to any view so far (stored or written since): a version
   * built beside the live one that holds at least this much can take its place with nothing missed.
   */
  reach(): PositionMap {
    return { ...this.reached };
  }

  /** Positions one view holds. */
  appliedBy(view: string): PositionMap {
    return { ...this.projections.find((p) => p.name === view)?.applied };
  }

  /**
   * Opens the versions being built beside these views: in this schema, under version names (see
   * pg-versions.ts), on a connection of their own. `fresh`: what was built of them is dropped first.
   */
  async openShadow(views: ViewDefinition[] | undefined, fresh: boolean): Promise<ShadowStore> {
    if (views === undefined) throw new CqpError('STAGE', `${this.where}: the events table is not built beside the live views`);
    const next = views.filter((v): v is ColumnViewDefinition => v.kind === 'columns').map(nextVersion);
    const handlers = views.filter((v) => v.kind === 'handler');
    const { schema } = this.options;
    const side = sideSchema(schema);
    if (fresh) {
      await this.serial(async () => {
        const rows = await viewRows(await this.connected(), schema);
        for (const v of next) await dropPgView(this.client as PgClient, schema, v.table, rows.get(v.table)?.tables ?? []);
        await (this.client as PgClient).query(`DROP SCHEMA IF EXISTS ${q(side)} CASCADE`);
      });
    }
    const role = 'sink postgres (building beside)';
    const parts: Array<{ store: PgViewStore; prefix: string }> = [];
    try {
      if (next.length > 0) parts.push({ store: await PgViewStore.open({ ...this.options, views: next, role, shadow: true, beside: false, group: undefined }), prefix: NEXT });
      if (handlers.length > 0) {
        const store = await PgViewStore.open({ ...this.options, schema: side, readsFrom: schema, views: handlers, role, shadow: true, beside: false, group: undefined });
        parts.push({ store, prefix: '' });
      }
    } catch (error) {
      for (const { store } of parts) await store.close();
      throw error;
    }
    return new PgShadow(parts);
  }

  /** Nothing: a version swapped in takes its tables and records with it, and those left over are dropped at the next start. */
  removeShadow(): void {}

  /**
   * Swaps in the version of `pending` built beside it, when `ready()` still holds once the batches
   * before it are done: one transaction renames its tables into place (the live version's dropped) with
   * its positions and record. From then on it is maintained here.
   */
  adopt(pending: PendingView, _shadow: ShadowStore, ready: () => boolean): Promise<boolean> {
    return this.serial(async () => {
      if (!ready()) return false;
      const view = pending.definition as ViewDefinition;
      const client = await this.connected();
      this.known = false;
      try {
        if (view.kind === 'columns') await swapInPg(client, this.options.schema, view, pending.hash, viewHash(nextVersion(view)), this.where);
        else await swapInPgSide(client, this.options.schema, view, pending.hash, this.where);
      } catch (error) {
        throw storageError(this.where, error);
      }
      const fresh =
        view.kind === 'columns' ? new ColumnProjection(this.options.schema, view) : new HandlerProjection(view as HandlerViewDefinition, (await loadHandler(view as HandlerViewDefinition, pending.hash)) as unknown as PgHandler);
      const at = this.projections.findIndex((p) => p.name === view.table);
      if (at >= 0) this.projections.splice(at, 1, fresh);
      else this.projections.push(fresh);
      await this.readPositions(client);
      const index = this.pending.indexOf(pending);
      if (index >= 0) this.pending.splice(index, 1);
      // The schema the handler views were built in, once the last of them is swapped in.
      if (!this.pending.some((p) => p.definition.kind === 'handler')) await client.query(`DROP SCHEMA IF EXISTS ${q(sideSchema(this.options.schema))} CASCADE`);
      return true;
    });
  }

  /** Lets go of a view here (its version was swapped in: its tables and records are the live view's now). */
  forget(view: string): void {
    const at = this.projections.findIndex((p) => p.name === view);
    if (at >= 0) this.projections.splice(at, 1);
  }

  /** The connection, made again when it was lost. */
  private async connected(): Promise<PgClient> {
    if (this.client === undefined || this.lost) {
      await disconnect(this.client);
      this.client = undefined;
      await this.connect();
    }
    return this.client as PgClient;
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
    await this.serial(async () => {
      const started = performance.now();
      try {
        await this.applyNow(items, onBad, through);
      } finally {
        this.busy += performance.now() - started;
      }
    });
  }

  private async applyNow(items: ViewEvent[], onBad: BadEventHandler, through?: PositionMap): Promise<void> {
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
        await writeBatch(this.batchTarget(), this.client as PgClient, items, once, through, seen);
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

  /** This store as the batch writer sees it. */
  private batchTarget(): BatchTarget {
    const { schema, group } = this.options;
    return { schema, group, projections: this.projections, where: this.where, reached: this.reached, begin: (client, sources) => this.begin(client, sources) };
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

export { readPgViewsApplied } from './pg-versions.js';
