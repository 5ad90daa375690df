/**
 * A batch's transaction on PostgreSQL, and what a view does in it. Statements whose results nobody
 * reads are held and sent together, in order, with the next query that needs an answer or with the
 * positions and COMMIT: a batch of columns views is two round trips (BEGIN with the positions read,
 * then the writes, the new positions and COMMIT), whatever it holds.
 */
import type pg from 'pg';
import type { PositionMap } from '../core/position.js';
import type { PgClient } from './pg-connection.js';
import type { BadEventHandler, ViewEvent } from './store.js';

/** The open transaction of one batch on the store's connection. */
export class PgTransaction {
  private held: string[] = [];

  constructor(readonly client: PgClient) {}

  /** Holds a statement whose result is not needed; it runs before anything sent after it. */
  add(sql: string): void {
    this.held.push(sql);
  }

  /** Sends the statements held (one multi-statement query, so no parameters). */
  async flush(): Promise<void> {
    if (this.held.length === 0) return;
    const text = this.held.join(';\n');
    this.held = [];
    await this.client.query(text);
  }

  /** Runs a query whose answer is needed, after the statements held. */
  async query<R extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    await this.flush();
    return this.client.query<R>(sql, params);
  }

  /** Sends what is held, then `last` (the new positions) and COMMIT, in one round trip. */
  async commit(last?: string): Promise<void> {
    if (last !== undefined) this.held.push(last);
    this.held.push('COMMIT');
    await this.flush();
  }
}

/** One maintained view: its positions and how it writes a batch's events. */
export interface Projection {
  readonly name: string;
  applied: PositionMap;
  /** Applies the events of the batch this view has not applied yet (`todo`: indexes into `items`). */
  apply(tx: PgTransaction, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void>;
}
