/**
 * Views kept by a handler module in PostgreSQL: the module's init() and handle(event, sql) get an SQL
 * helper bound to the batch's transaction (`$1`-style parameters, promises), and each event that writes
 * runs under a savepoint, so a handler that fails leaves no partial writes and its event follows the error policy.
 */
import type { JsonObject } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { LosslessNumber } from '../core/json.js';
import type { PositionMap } from '../core/position.js';
import { bindable } from './column-values.js';
import type { HandlerViewDefinition } from './definition.js';
import { isConnectionError, type PgClient } from './pg-connection.js';
import type { PgTransaction, Projection } from './pg-transaction.js';
import type { BadEventHandler, ViewEvent } from './store.js';

/** The transaction-bound SQL helper a handler module receives in PostgreSQL: `$1`-style parameters, promises. */
export interface PgViewSql {
  run(sql: string, ...params: unknown[]): Promise<{ changes: number }>;
  get<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T | undefined>;
  all<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T[]>;
}

/** What a handler module's default export provides, as PostgreSQL calls it. */
export interface PgHandler {
  init?(sql: PgViewSql): unknown;
  handle(event: JsonObject, sql: PgViewSql): unknown;
}

/** A parameter a handler passes, as pg binds it. */
function pgParam(p: unknown): unknown {
  const v = bindable(p);
  return typeof v === 'bigint' ? v.toString() : v instanceof LosslessNumber ? v.text : v;
}

/**
 * The helper handed to handler modules: queries run one after another on the batch's connection, in
 * the order they were called, awaited or not (`settle` waits for the last one and gives its first error).
 */
function sqlHelper(
  client: () => PgClient,
  name: string,
  active: () => boolean,
  before: () => Promise<void>,
): PgViewSql & { settle(): Promise<void> } {
  let chain: Promise<unknown> = Promise.resolve();
  let failure: unknown;
  const query = (sql: string, params: unknown[]) => {
    if (!active()) return Promise.reject(new CqpError('STAGE', `view ${name}: the sql helper works only inside init() and handle()`));
    const run: Promise<{ rowCount: number | null; rows: unknown[] }> = chain.then(async () => {
      await before();
      return client().query(sql, params.map(pgParam));
    });
    chain = run.catch((error: unknown) => {
      failure ??= error;
    });
    return run;
  };
  // A promise the handler does not await must not end the process when it fails: settle() reports it.
  const handled = <T>(p: Promise<T>): Promise<T> => {
    p.catch(() => undefined);
    return p;
  };
  return {
    run: (sql, ...params) => handled(query(sql, params).then((r) => ({ changes: r.rowCount ?? 0 }))),
    get: <T>(sql: string, ...params: unknown[]) => handled(query(sql, params).then((r) => r.rows[0] as T | undefined)),
    all: <T>(sql: string, ...params: unknown[]) => handled(query(sql, params).then((r) => r.rows as T[])),
    async settle() {
      await chain;
      const error = failure;
      failure = undefined;
      if (error !== undefined) throw error;
    },
  };
}

/** A view a handler module keeps: its tables are whatever its init() creates. */
export class HandlerProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  private active = false;
  private client: PgClient | undefined;
  /** The event being handled wants a savepoint before its first query; `open`: it has one. */
  private savepoint: 'none' | 'wanted' | 'open' = 'none';
  /** The savepoint of an earlier event that succeeded, not released yet (released with the next one's). */
  private unreleased = false;
  readonly sql: PgViewSql & { settle(): Promise<void> };

  constructor(
    view: HandlerViewDefinition,
    private readonly handler: PgHandler,
  ) {
    this.name = view.table;
    this.sql = sqlHelper(
      () => this.client as PgClient,
      view.table,
      () => this.active,
      () => this.openSavepoint(),
    );
  }

  /** Whether the event being handled opened its savepoint (its handler's queries change the field). */
  private hasSavepoint(): boolean {
    return this.savepoint === 'open';
  }

  /**
   * An event's savepoint is opened by its first query: an event the handler writes nothing for costs no
   * round trip. The previous event's savepoint is released in the same round trip.
   */
  private async openSavepoint(): Promise<void> {
    if (this.savepoint !== 'wanted') return;
    this.savepoint = 'open';
    const release = this.unreleased ? 'RELEASE SAVEPOINT cqp_event;\n' : '';
    this.unreleased = false;
    await (this.client as PgClient).query(`${release}SAVEPOINT cqp_event`);
  }

  /** Runs the module's init() (as the view is built, inside the building transaction). */
  async init(client: PgClient): Promise<void> {
    if (!this.handler.init) return;
    this.client = client;
    this.active = true;
    try {
      await this.handler.init(this.sql);
      await this.sql.settle();
    } catch (error) {
      throw new CqpError('CONFIG', `view ${this.name}: init() of its handler module failed: ${messageOf(error)}`, { cause: error });
    } finally {
      this.active = false;
    }
  }

  async apply(tx: PgTransaction, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
    // What the views before this one wrote is sent first: the handler may read it.
    await tx.flush();
    const client = tx.client;
    this.client = client;
    this.unreleased = false;
    for (const i of todo) {
      // A savepoint per event that writes: a failing event leaves no partial writes.
      this.savepoint = 'wanted';
      this.active = true;
      try {
        try {
          await this.handler.handle((items[i] as ViewEvent).event as JsonObject, this.sql);
        } finally {
          this.active = false;
          // Queries the handler did not await still run, in order, before the event counts as done.
          await this.sql.settle();
        }
        if (this.hasSavepoint()) this.unreleased = true;
      } catch (error) {
        this.active = false;
        if (isConnectionError(error) || error instanceof CqpError) throw error;
        if (this.hasSavepoint()) await client.query('ROLLBACK TO SAVEPOINT cqp_event;\nRELEASE SAVEPOINT cqp_event');
        onBad(i, `view ${this.name}: handler failed: ${messageOf(error)}`);
      } finally {
        this.savepoint = 'none';
      }
    }
    // The last event's savepoint goes with what the batch sends next.
    if (this.unreleased) tx.add('RELEASE SAVEPOINT cqp_event');
    this.unreleased = false;
  }
}
