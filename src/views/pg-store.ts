/**
 * PostgreSQL query views: the same views files as the SQLite store (same actions, same column paths),
 * written set-based. Each batch is folded per view and key in memory (an upsert after a delete, an
 * increment after an upsert…) into at most a DELETE and a few multi-row upserts through `unnest`, then
 * committed in one transaction with the views' positions, which are read inside that transaction: every
 * event applies once across crashes and reconnections. One writer per schema (an advisory lock held for
 * the store's life). A lost connection is retried with backoff; the batch is only acknowledged once
 * committed, and a retry skips whatever the commit it could not confirm did apply.
 */
import type pg from 'pg';
import type { JsonObject } from '../core/component.js';
import { backoffMs, sleep } from '../core/backoff.js';
import { CqpError, messageOf } from '../core/errors.js';
import { LosslessNumber, stringifyJson } from '../core/json.js';
import { compileFallbackPath, compilePath } from '../core/paths.js';
import type { PathGetter } from '../core/paths.js';
import { holds, isApplied, minimumPositions } from '../core/position.js';
import type { PositionMap } from '../core/position.js';
import { amountConverter, BadEvent, bindable, CONVERTERS, describe, plain, type Convert, type SqlValue } from './column-values.js';
import { DEFAULT_KEY_PATHS, DEFAULT_TYPE_PATHS, viewHash } from './definition.js';
import type { ColumnType, ColumnViewDefinition, HandlerViewDefinition, ViewDefinition } from './definition.js';
import { connect, describeUrl, disconnect, isConnectionError, lockSchema, q, type PgClient } from './pg-connection.js';
import { compareFast, EVENTS_VIEW, loadHandler, positionRanges, type BadEventHandler, type ViewEvent } from './store.js';

const EVENTS_HASH = 'events-table-pg-v1';

/** The transaction-bound SQL helper a handler module receives in PostgreSQL: `$1`-style parameters, promises. */
export interface PgViewSql {
  run(sql: string, ...params: unknown[]): Promise<{ changes: number }>;
  get<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T | undefined>;
  all<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T[]>;
}

interface PgHandler {
  init?(sql: PgViewSql): unknown;
  handle(event: JsonObject, sql: PgViewSql): unknown;
}

/** Column types in PostgreSQL; an untyped column keeps the value's text (numbers exactly as written). */
const PG_TYPES: Record<ColumnType | 'any', string> = { any: 'text', text: 'text', integer: 'bigint', real: 'double precision', json: 'jsonb', boolean: 'boolean' };

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A value as the text PostgreSQL parses into the column's type; strings PostgreSQL cannot hold are refused. */
function pgText(value: SqlValue, type: ColumnType | 'any', where: string): string | null {
  if (value === null) return null;
  if (type === 'boolean') return value === 1 || value === 1n ? 'true' : 'false';
  if (typeof value === 'string') {
    // PostgreSQL text holds no NUL character, and jsonb no \u0000 escape.
    if (value.includes('\0') || (type === 'json' && value.includes('\\u0000'))) throw new BadEvent(`${where}: PostgreSQL cannot store the NUL character (\\u0000) in text`);
    return value;
  }
  if (type === 'integer' && typeof value === 'number' && !Number.isSafeInteger(value)) {
    const n = Number.isInteger(value) ? BigInt(value) : undefined;
    if (n === undefined || n < INT64_MIN || n > INT64_MAX) throw new BadEvent(`${where}: ${String(value)} is not an integer PostgreSQL's bigint holds`);
    return n.toString();
  }
  return typeof value === 'bigint' ? value.toString() : String(value);
}

/** Events a view applies, folded per key: a DELETE first, then the columns set or added. */
interface KeyState {
  key: string;
  deleted: boolean;
  /** Written after the delete (or without one): a row exists at the end. */
  written: boolean;
  /** Per column index: 0 untouched, SET (the value, as PostgreSQL's text) or ADD (an amount to add). */
  ops: Uint8Array;
  values: SqlValue[];
}

const SET = 1;
const ADD = 2;

interface PreparedColumn {
  name: string;
  get: PathGetter;
  convert: Convert;
  type: ColumnType | 'any';
  where: string;
}

type Action = { kind: 'upsert' | 'insert' | 'delete' } | { kind: 'increment'; amounts: Array<{ column: number; get: PathGetter; convert: Convert; where: string }> };

/** One maintained view: its positions and how it writes a batch's events. */
interface Projection {
  readonly name: string;
  applied: PositionMap;
  /** Applies the events of the batch this view has not applied yet (`todo`: indexes into `items`). */
  apply(client: PgClient, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void>;
}

class ColumnProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  private readonly table: string;
  private readonly keyColumn: string;
  private readonly keyOf: PathGetter;
  private readonly keyConvert: Convert;
  private readonly keyType: ColumnType;
  private readonly keyWhere: string;
  private readonly typeOf: PathGetter;
  /** Every declared column (increment-only ones too), by index. */
  private readonly columns: PreparedColumn[];
  private readonly actions = new Map<string, Action>();

  constructor(
    schema: string,
    view: ColumnViewDefinition,
  ) {
    this.name = view.table;
    this.table = `${q(schema)}.${q(view.table)}`;
    this.keyColumn = q(view.key.column);
    this.keyOf = compileFallbackPath(view.key.paths);
    this.keyConvert = CONVERTERS[view.key.type];
    this.keyType = view.key.type;
    this.keyWhere = `key ${view.key.paths.join(' / ')}`;
    this.typeOf = compileFallbackPath(view.typePaths);
    this.columns = view.columns.map((c) => ({
      name: c.name,
      get: c.path === undefined ? () => undefined : compilePath(c.path),
      convert: CONVERTERS[c.type ?? 'any'],
      type: c.type ?? 'any',
      where: `column ${c.name} (${c.path ?? 'increment only'})`,
    }));
    // Only columns with a path are written by upserts; increment-only ones are skipped there.
    const index = new Map(view.columns.map((c, i) => [c.name, i]));
    for (const [type, action] of Object.entries(view.on)) {
      if (action.kind === 'increment') {
        const amounts = Object.entries(action.columns).map(([column, path]) => {
          const i = index.get(column) as number;
          return { column: i, get: compilePath(path), convert: amountConverter((this.columns[i] as PreparedColumn).type), where: `increment of ${column} (${path})` };
        });
        this.actions.set(type, { kind: 'increment', amounts });
      } else {
        this.actions.set(type, { kind: action.kind });
      }
    }
  }

  static createSql(schema: string, view: ColumnViewDefinition): string {
    const incremented = new Set<string>();
    for (const action of Object.values(view.on)) if (action.kind === 'increment') for (const c of Object.keys(action.columns)) incremented.add(c);
    const columns = view.columns.map((c) => `${q(c.name)} ${PG_TYPES[c.type ?? 'any']}${incremented.has(c.name) ? ' DEFAULT 0' : ''}`);
    const key = `${q(view.key.column)} ${PG_TYPES[view.key.type]} PRIMARY KEY NOT NULL`;
    return `CREATE TABLE ${q(schema)}.${q(view.table)} (${[key, ...columns].join(', ')})`;
  }

  async apply(client: PgClient, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
    // First pass: each event's action and key; bad keys reported.
    const prepared: Array<{ i: number; type: string; action: Action; key: string } | undefined> = [];
    const insertKeys = new Set<string>();
    for (const i of todo) {
      const event = (items[i] as ViewEvent).event as JsonObject;
      const type = this.typeOf(event);
      if (typeof type !== 'string') continue;
      const action = this.actions.get(type);
      if (action === undefined) continue;
      try {
        const raw = this.keyOf(event);
        if (raw === undefined || raw === null) throw new BadEvent(`no ${this.keyWhere} in a ${type} event`);
        const key = pgText(this.keyConvert(raw, this.keyWhere), this.keyType, this.keyWhere) as string;
        prepared.push({ i, type, action, key });
        if (action.kind === 'insert') insertKeys.add(key);
      } catch (error) {
        if (!(error instanceof BadEvent)) throw error;
        onBad(i, `view ${this.name}: ${error.message}`);
      }
    }
    if (prepared.length === 0) return;
    // Whether the rows an insert adds exist already (read inside the transaction: this writer alone changes them).
    const exists = new Map<string, boolean>();
    if (insertKeys.size > 0) {
      const found = await client.query<{ k: string }>(
        `SELECT ${this.keyColumn}::text AS k FROM ${this.table} WHERE ${this.keyColumn} = ANY($1::${PG_TYPES[this.keyType]}[])`,
        [[...insertKeys]],
      );
      for (const k of insertKeys) exists.set(k, false);
      for (const row of found.rows) exists.set(row.k, true);
    }
    let round = new Map<string, KeyState>();
    const state = (key: string): KeyState => {
      let s = round.get(key);
      if (s === undefined) {
        s = { key, deleted: false, written: false, ops: new Uint8Array(this.columns.length), values: new Array<SqlValue>(this.columns.length) };
        round.set(key, s);
      }
      return s;
    };
    for (const p of prepared) {
      if (p === undefined) continue;
      const event = (items[p.i] as ViewEvent).event as JsonObject;
      try {
        const { action, key } = p;
        if (action.kind === 'delete') {
          const s = state(key);
          s.deleted = true;
          s.written = false;
          s.ops.fill(0);
          exists.set(key, false);
          continue;
        }
        if (action.kind === 'increment') {
          const adds: Array<[number, SqlValue]> = [];
          for (const a of action.amounts) {
            const value = a.get(event);
            if (value === undefined || value === null) throw new BadEvent(`${a.where}: missing in a ${p.type} event`);
            adds.push([a.column, a.convert(value, a.where)]);
          }
          // Two additions of reals to one row in a batch: written in turn, so the sums round as one at a time would.
          if (adds.some(([c]) => this.columns[c]?.type === 'real' && round.get(key)?.ops[c] === ADD)) {
            await this.flush(client, round);
            round = new Map();
          }
          const s = state(key);
          for (const [c, amount] of adds) {
            const col = this.columns[c] as PreparedColumn;
            const op = s.ops[c];
            if (op === 0) {
              // On a row deleted in this batch the amount is the new value; on another, it is added.
              s.ops[c] = s.deleted ? SET : ADD;
              s.values[c] = s.deleted ? pgText(amount, col.type, col.where) : amount;
            } else {
              const held = s.values[c];
              const before = op === SET && typeof held === 'string' ? (col.type === 'integer' ? BigInt(held) : Number(held)) : held;
              const total = sum(before === null ? 0 : (before as SqlValue), amount, col.type, col.where);
              s.values[c] = op === SET ? pgText(total, col.type, col.where) : total;
            }
          }
          s.written = true;
          exists.set(key, true);
          continue;
        }
        const values: Array<[number, SqlValue]> = [];
        for (let c = 0; c < this.columns.length; c++) {
          const col = this.columns[c] as PreparedColumn;
          const value = col.get(event);
          if (value === undefined) continue;
          // As PostgreSQL's text: what it cannot hold is refused here, for this event alone.
          values.push([c, pgText(col.convert(value, col.where), col.type, col.where)]);
        }
        if (action.kind === 'insert' && exists.get(key) === true) {
          throw new BadEvent(`${this.name} already has a row with key ${describe(key)} (insert adds new rows; use upsert to update them)`);
        }
        const s = state(key);
        for (const [c, value] of values) {
          s.ops[c] = SET;
          s.values[c] = value;
        }
        s.written = true;
        exists.set(key, true);
      } catch (error) {
        if (!(error instanceof BadEvent)) throw error;
        onBad(p.i, `view ${this.name}: ${error.message}`);
      }
    }
    await this.flush(client, round);
  }

  /** Writes one round: deletes first, then one multi-row upsert per shape (the columns set or added). */
  private async flush(client: PgClient, round: Map<string, KeyState>): Promise<void> {
    const keyType = PG_TYPES[this.keyType];
    const deleted = [...round.values()].filter((s) => s.deleted).map((s) => s.key);
    if (deleted.length > 0) await client.query(`DELETE FROM ${this.table} WHERE ${this.keyColumn} = ANY($1::${keyType}[])`, [deleted]);
    const shapes = new Map<string, { cols: Array<{ c: number; add: boolean }>; rows: KeyState[] }>();
    for (const s of round.values()) {
      if (!s.written) continue;
      const id = s.ops.join('');
      let shape = shapes.get(id);
      if (shape === undefined) {
        const cols: Array<{ c: number; add: boolean }> = [];
        s.ops.forEach((op, c) => {
          if (op !== 0) cols.push({ c, add: op === ADD });
        });
        shape = { cols, rows: [] };
        shapes.set(id, shape);
      }
      shape.rows.push(s);
    }
    for (const { cols, rows } of shapes.values()) {
      const params: Array<Array<string | null>> = [rows.map((s) => s.key)];
      for (const { c, add } of cols) {
        const col = this.columns[c] as PreparedColumn;
        params.push(rows.map((s) => (add ? pgText(s.values[c] as SqlValue, col.type, col.where) : (s.values[c] as string | null))));
      }
      const names = [this.keyColumn, ...cols.map(({ c }) => q((this.columns[c] as PreparedColumn).name))];
      const casts = [keyType, ...cols.map(({ c }) => PG_TYPES[(this.columns[c] as PreparedColumn).type])];
      const insert = `INSERT INTO ${this.table} AS cqp_row (${names.join(', ')}) SELECT * FROM unnest(${casts.map((t, i) => `$${i + 1}::${t}[]`).join(', ')})`;
      const set = cols.map(({ c, add }) => {
        const n = q((this.columns[c] as PreparedColumn).name);
        return add ? `${n} = coalesce(cqp_row.${n}, 0) + excluded.${n}` : `${n} = excluded.${n}`;
      });
      const sql = set.length === 0 ? `${insert} ON CONFLICT (${this.keyColumn}) DO NOTHING` : `${insert} ON CONFLICT (${this.keyColumn}) DO UPDATE SET ${set.join(', ')}`;
      await client.query({ text: sql, values: params });
    }
  }
}

/** Two amounts added in memory: integers exactly (as PostgreSQL's bigint would), reals as doubles. */
function sum(a: SqlValue, b: SqlValue, type: ColumnType | 'any', where: string): SqlValue {
  if (type === 'integer') {
    const n = BigInt(a as number | bigint) + BigInt(b as number | bigint);
    if (n < INT64_MIN || n > INT64_MAX) throw new BadEvent(`${where}: the sum ${n} is beyond PostgreSQL's bigint`);
    return n;
  }
  return Number(a) + Number(b);
}

class EventsProjection implements Projection {
  applied: PositionMap = {};
  readonly name = EVENTS_VIEW;
  private readonly idOf = compileFallbackPath(['header.eventId', 'id']);
  private readonly typeOf = compileFallbackPath(DEFAULT_TYPE_PATHS);
  private readonly keyOf = compileFallbackPath(DEFAULT_KEY_PATHS);
  private readonly timeOf = compileFallbackPath(['header.createdTimestamp', 'time']);

  constructor(private readonly schema: string) {}

  static createSql(schema: string): string[] {
    const t = `${q(schema)}.${EVENTS_VIEW}`;
    return [
      `CREATE TABLE ${t} (seq bigserial PRIMARY KEY, event_id text, type text, entity_key text, time text, body jsonb NOT NULL)`,
      `CREATE INDEX ${EVENTS_VIEW}_by_key ON ${t} (entity_key)`,
      `CREATE INDEX ${EVENTS_VIEW}_by_type ON ${t} (type)`,
    ];
  }

  async apply(client: PgClient, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
    const cols: Array<Array<string | null>> = [[], [], [], [], []];
    const text = (v: unknown): string | null => {
      const p = plain(v ?? null);
      return p === null ? null : pgText(p, 'text', 'event');
    };
    for (const i of todo) {
      const item = items[i] as ViewEvent;
      const event = item.event as JsonObject;
      try {
        const row = [text(this.idOf(event)), text(this.typeOf(event)), text(this.keyOf(event)), text(this.timeOf(event)), pgText(item.text ?? stringifyJson(event) ?? '{}', 'json', 'event')];
        for (let c = 0; c < 5; c++) (cols[c] as Array<string | null>).push(row[c] as string | null);
      } catch (error) {
        if (!(error instanceof BadEvent)) throw error;
        onBad(i, `view ${this.name}: ${error.message}`);
      }
    }
    if ((cols[0] as unknown[]).length === 0) return;
    await client.query({
      text:
        `INSERT INTO ${q(this.schema)}.${EVENTS_VIEW} (event_id, type, entity_key, time, body) ` +
        'SELECT i, t, k, tm, b FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS u(i, t, k, tm, b, o) ORDER BY o',
      values: cols,
    });
  }
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
function sqlHelper(client: () => PgClient, name: string, active: () => boolean): PgViewSql & { settle(): Promise<void> } {
  let chain: Promise<unknown> = Promise.resolve();
  let failure: unknown;
  const query = (sql: string, params: unknown[]) => {
    if (!active()) return Promise.reject(new CqpError('STAGE', `view ${name}: the sql helper works only inside init() and handle()`));
    const run: Promise<{ rowCount: number | null; rows: unknown[] }> = chain.then(() => client().query(sql, params.map(pgParam)));
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

class HandlerProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  private active = false;
  private client: PgClient | undefined;
  readonly sql: PgViewSql & { settle(): Promise<void> };

  constructor(
    view: HandlerViewDefinition,
    private readonly handler: PgHandler,
  ) {
    this.name = view.table;
    this.sql = sqlHelper(() => this.client as PgClient, view.table, () => this.active);
  }

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

  async apply(client: PgClient, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
    this.client = client;
    for (const i of todo) {
      // A savepoint per event: a failing event leaves no partial writes.
      await client.query('SAVEPOINT cqp_event');
      this.active = true;
      try {
        try {
          await this.handler.handle((items[i] as ViewEvent).event as JsonObject, this.sql);
        } finally {
          this.active = false;
          // Queries the handler did not await still run, in order, before the event counts as done.
          await this.sql.settle();
        }
        await client.query('RELEASE SAVEPOINT cqp_event');
      } catch (error) {
        this.active = false;
        if (isConnectionError(error) || error instanceof CqpError) throw error;
        await client.query('ROLLBACK TO SAVEPOINT cqp_event');
        onBad(i, `view ${this.name}: handler failed: ${messageOf(error)}`);
      }
    }
  }
}

const META_SQL = (schema: string): string[] => [
  `CREATE SCHEMA IF NOT EXISTS ${q(schema)}`,
  `CREATE TABLE IF NOT EXISTS ${q(schema)}.cqp_positions (view text NOT NULL, source text NOT NULL, n text NOT NULL, PRIMARY KEY (view, source))`,
  `CREATE TABLE IF NOT EXISTS ${q(schema)}.cqp_views (view text PRIMARY KEY NOT NULL, definition_hash text NOT NULL, tables jsonb NOT NULL)`,
];

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
}

/** PostgreSQL query views kept in one schema; see the top of this file. */
export class PgViewStore {
  private client: PgClient | undefined;
  private lost = false;
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
      for (const [i, p] of projections.entries()) {
        const view = views?.[i];
        const create = async (): Promise<void> => {
          if (view === undefined) for (const sql of EventsProjection.createSql(schema)) await client.query(sql);
          else if (view.kind === 'columns') await client.query(ColumnProjection.createSql(schema, view));
          else await (inits[i] as HandlerProjection).init(client);
        };
        await store.build(p.name, hashes[i] as string, create);
      }
      await store.readPositions(client);
    } catch (error) {
      await store.close();
      throw error;
    }
    return store;
  }

  private async connect(): Promise<void> {
    this.lost = false;
    const client = await connect(this.options.url, this.options.role ?? 'sink postgres', () => {
      this.lost = true;
    });
    try {
      await lockSchema(client, this.options.url, this.options.schema);
      await client.query(`SET search_path TO ${q(this.options.schema)}, public`).catch(() => undefined);
      for (const sql of META_SQL(this.options.schema)) await client.query(sql);
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
    const select = `SELECT view, source, n FROM ${q(this.options.schema)}.cqp_positions`;
    const results = (await client.query(begin ? `BEGIN; ${select}` : select)) as unknown as pg.QueryResult | pg.QueryResult[];
    const rows = (Array.isArray(results) ? results[results.length - 1] : results) as pg.QueryResult<{ view: string; source: string; n: string }>;
    for (const row of rows.rows) {
      const map = byView.get(row.view);
      if (map !== undefined) map[row.source] = row.n;
    }
    for (const p of this.projections) p.applied = byView.get(p.name) as PositionMap;
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
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.client === undefined || this.lost) {
          await disconnect(this.client);
          this.client = undefined;
          await this.connect();
          this.options.warn(`cqp: ${this.where}: connected again; writing the batch`);
        }
        await this.transaction(this.client as PgClient, items, once, through);
        return;
      } catch (error) {
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

  private async transaction(client: PgClient, items: ViewEvent[], onBad: BadEventHandler, through: PositionMap | undefined): Promise<void> {
    await this.readPositions(client, true);
    const ranges = positionRanges(items);
    for (const source in through) {
      const n = through[source] as string;
      const range = ranges.get(source);
      if (range === undefined) ranges.set(source, { min: n, max: n });
      else if (compareFast(n, range.max) > 0) range.max = n;
    }
    const moved: PositionMap[] = [];
    const rows: [string[], string[], string[]] = [[], [], []];
    for (const p of this.projections) {
      let check = false;
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && (compareFast(last, range.min) >= 0 || holds(last, range.min))) check = true;
      }
      const todo: number[] = [];
      for (let i = 0; i < items.length; i++) {
        const position = (items[i] as ViewEvent).position;
        if (check && position !== undefined && isApplied(p.applied, position)) continue;
        todo.push(i);
      }
      if (todo.length > 0) await p.apply(client, items, todo, onBad);
      const m: PositionMap = {};
      for (const [source, range] of ranges) {
        const last = p.applied[source];
        if (last !== undefined && compareFast(range.max, last) <= 0) continue;
        m[source] = range.max;
        rows[0].push(p.name);
        rows[1].push(source);
        rows[2].push(range.max);
      }
      moved.push(m);
    }
    // The positions and the COMMIT in one round trip (a simple query: the few values are quoted literals).
    const values = rows[0].map((view, i) => `(${client.escapeLiteral(view)}, ${client.escapeLiteral(rows[1][i] as string)}, ${client.escapeLiteral(rows[2][i] as string)})`);
    await client.query(
      values.length === 0
        ? 'COMMIT'
        : `INSERT INTO ${q(this.options.schema)}.cqp_positions (view, source, n) VALUES ${values.join(', ')} ON CONFLICT (view, source) DO UPDATE SET n = excluded.n; COMMIT`,
    );
    this.projections.forEach((p, v) => Object.assign(p.applied, moved[v]));
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
