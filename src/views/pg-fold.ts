/**
 * How a batch becomes set-based writes in PostgreSQL: the events a columns view applies are folded per
 * key in memory (an upsert after a delete, an increment after an upsert…) into at most a DELETE and one
 * multi-row upsert per shape (the columns set or added); the events table takes a batch in one INSERT.
 * A bad event (no key, a value the column refuses) is reported and leaves the fold as it was.
 */
import type { JsonObject } from '../core/component.js';
import { stringifyJson } from '../core/json.js';
import { compileFallbackPath, compilePath, type PathGetter } from '../core/paths.js';
import type { PositionMap } from '../core/position.js';
import { amountConverter, BadEvent, CONVERTERS, describe, plain, type Convert, type SqlValue } from './column-values.js';
import { DEFAULT_KEY_PATHS, DEFAULT_TYPE_PATHS, type ColumnType, type ColumnViewDefinition } from './definition.js';
import { q } from './pg-connection.js';
import { deleteSql, eventsInsertSql, existingKeysSql, INT64_MAX, INT64_MIN, PG_TYPES, pgText, upsertSql, type UpsertColumn, type ViewTable } from './pg-sql.js';
import type { PgTransaction, Projection } from './pg-transaction.js';
import { EVENTS_VIEW, type BadEventHandler, type ViewEvent } from './store.js';

/** Events a view applies, folded per key: a DELETE first, then the columns set or added. */
interface KeyState {
  key: string;
  deleted: boolean;
  /** Written after the delete (or without one): a row exists at the end. */
  written: boolean;
  /** Per column index: 0 untouched, SET (the value, as PostgreSQL's text) or ADD (an amount to add). */
  ops: number[];
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

/** Two amounts added in memory: integers exactly (as PostgreSQL's bigint would), reals as doubles. */
function sum(a: SqlValue, b: SqlValue, type: ColumnType | 'any', where: string): SqlValue {
  if (type === 'integer') {
    const n = BigInt(a as number | bigint) + BigInt(b as number | bigint);
    if (n < INT64_MIN || n > INT64_MAX) throw new BadEvent(`${where}: the sum ${n} is beyond PostgreSQL's bigint`);
    return n;
  }
  return Number(a) + Number(b);
}

/** A view from a views file's columns: a table with one row per key. */
export class ColumnProjection implements Projection {
  applied: PositionMap = {};
  readonly name: string;
  private readonly t: ViewTable;
  private readonly keyOf: PathGetter;
  private readonly keyConvert: Convert;
  private readonly keyType: ColumnType;
  private readonly keyWhere: string;
  private readonly typeOf: PathGetter;
  /** Every declared column (increment-only ones too), by index. */
  private readonly columns: PreparedColumn[];
  private readonly actions = new Map<string, Action>();
  private readonly hasInsert: boolean;
  /** Per column, what the event being folded sets or adds (0 nothing), and the value: kept between events. */
  private readonly touched: Uint8Array;
  private readonly scratch: SqlValue[];

  constructor(schema: string, view: ColumnViewDefinition) {
    this.name = view.table;
    this.t = { table: `${q(schema)}.${q(view.table)}`, key: q(view.key.column), keyType: PG_TYPES[view.key.type] };
    this.keyOf = compileFallbackPath(view.key.paths);
    this.keyConvert = CONVERTERS[view.key.type];
    this.keyType = view.key.type;
    this.keyWhere = `key ${view.key.paths.join(' / ')}`;
    this.typeOf = compileFallbackPath(view.typePaths);
    // Only columns with a path are written by upserts; increment-only ones are skipped there.
    this.columns = view.columns.map((c) => ({
      name: c.name,
      get: c.path === undefined ? () => undefined : compilePath(c.path),
      convert: CONVERTERS[c.type ?? 'any'],
      type: c.type ?? 'any',
      where: `column ${c.name} (${c.path ?? 'increment only'})`,
    }));
    this.touched = new Uint8Array(this.columns.length);
    this.scratch = new Array<SqlValue>(this.columns.length).fill(null);
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
    this.hasInsert = [...this.actions.values()].some((a) => a.kind === 'insert');
  }

  async apply(tx: PgTransaction, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
    // First pass: each event's action and key (parallel to `todo`; no action: undefined); bad keys reported.
    const actions = new Array<Action | undefined>(todo.length);
    const keys = new Array<string>(todo.length);
    const insertKeys = this.hasInsert ? new Set<string>() : undefined;
    let any = false;
    for (let t = 0; t < todo.length; t++) {
      const i = todo[t] as number;
      const event = (items[i] as ViewEvent).event as JsonObject;
      const type = this.typeOf(event);
      if (typeof type !== 'string') continue;
      const action = this.actions.get(type);
      if (action === undefined) continue;
      try {
        const raw = this.keyOf(event);
        if (raw === undefined || raw === null) throw new BadEvent(`no ${this.keyWhere} in a ${type} event`);
        const key = pgText(this.keyConvert(raw, this.keyWhere), this.keyType, this.keyWhere) as string;
        actions[t] = action;
        keys[t] = key;
        any = true;
        if (action.kind === 'insert') insertKeys?.add(key);
      } catch (error) {
        if (!(error instanceof BadEvent)) throw error;
        onBad(i, `view ${this.name}: ${error.message}`);
      }
    }
    if (!any) return;
    // Whether the rows an insert adds exist already (read inside the transaction: this writer alone changes them).
    const exists = new Map<string, boolean>();
    if (insertKeys !== undefined && insertKeys.size > 0) {
      const found = await tx.query<{ k: string }>(existingKeysSql(this.t), [[...insertKeys]]);
      for (const k of insertKeys) exists.set(k, false);
      for (const row of found.rows) exists.set(row.k, true);
    }
    let round = new Map<string, KeyState>();
    for (let t = 0; t < todo.length; t++) {
      const action = actions[t];
      if (action === undefined) continue;
      const key = keys[t] as string;
      const i = todo[t] as number;
      try {
        if (action.kind === 'delete') {
          const s = this.state(round, key);
          s.deleted = true;
          s.written = false;
          s.ops.fill(0);
          exists.set(key, false);
        } else if (action.kind === 'increment') {
          if (this.increment(round, key, action.amounts, (items[i] as ViewEvent).event as JsonObject)) {
            // Two additions of reals to one row in a batch: written in turn, so the sums round as one at a time would.
            this.write(tx, round);
            round = new Map();
            this.increment(round, key, action.amounts, (items[i] as ViewEvent).event as JsonObject);
          }
          exists.set(key, true);
        } else {
          this.set(round, key, action.kind === 'insert' && exists.get(key) === true, (items[i] as ViewEvent).event as JsonObject);
          exists.set(key, true);
        }
      } catch (error) {
        if (!(error instanceof BadEvent)) throw error;
        onBad(i, `view ${this.name}: ${error.message}`);
      }
    }
    this.write(tx, round);
  }

  private state(round: Map<string, KeyState>, key: string): KeyState {
    let s = round.get(key);
    if (s === undefined) {
      s = { key, deleted: false, written: false, ops: new Array<number>(this.columns.length).fill(0), values: new Array<SqlValue>(this.columns.length) };
      round.set(key, s);
    }
    return s;
  }

  /** An upsert or insert: the columns the event holds, all checked before the row's state changes. */
  private set(round: Map<string, KeyState>, key: string, existing: boolean, event: JsonObject): void {
    const { columns, touched, scratch } = this;
    for (let c = 0; c < columns.length; c++) {
      const col = columns[c] as PreparedColumn;
      const value = col.get(event);
      if (value === undefined) {
        touched[c] = 0;
        continue;
      }
      // As PostgreSQL's text: what it cannot hold is refused here, for this event alone.
      scratch[c] = pgText(col.convert(value, col.where), col.type, col.where);
      touched[c] = SET;
    }
    if (existing) throw new BadEvent(`${this.name} already has a row with key ${describe(key)} (insert adds new rows; use upsert to update them)`);
    const s = this.state(round, key);
    for (let c = 0; c < columns.length; c++) {
      if (touched[c] === 0) continue;
      s.ops[c] = SET;
      s.values[c] = scratch[c] as SqlValue;
    }
    s.written = true;
  }

  /**
   * An increment: the amounts, all checked before the row's state changes. True (and nothing changed)
   * when the event adds a real to a column this round has added to already: the round must be written first.
   */
  private increment(round: Map<string, KeyState>, key: string, amounts: Extract<Action, { kind: 'increment' }>['amounts'], event: JsonObject): boolean {
    const { columns, scratch } = this;
    const held = round.get(key);
    let split = false;
    for (const a of amounts) {
      const value = a.get(event);
      if (value === undefined || value === null) throw new BadEvent(`${a.where}: missing in a ${String(this.typeOf(event))} event`);
      scratch[a.column] = a.convert(value, a.where);
      if (held !== undefined && held.ops[a.column] === ADD && columns[a.column]?.type === 'real') split = true;
    }
    if (split) return true;
    const s = this.state(round, key);
    for (const a of amounts) {
      const c = a.column;
      const col = columns[c] as PreparedColumn;
      const amount = scratch[c] as SqlValue;
      const op = s.ops[c];
      if (op === 0) {
        // On a row deleted in this batch the amount is the new value; on another, it is added.
        s.ops[c] = s.deleted ? SET : ADD;
        s.values[c] = s.deleted ? pgText(amount, col.type, col.where) : amount;
      } else {
        const value = s.values[c];
        const before = op === SET && typeof value === 'string' ? (col.type === 'integer' ? BigInt(value) : Number(value)) : value;
        const total = sum(before === null ? 0 : (before as SqlValue), amount, col.type, col.where);
        s.values[c] = op === SET ? pgText(total, col.type, col.where) : total;
      }
    }
    s.written = true;
    return false;
  }

  /** Holds one round's statements: deletes first, then one multi-row upsert per shape (the columns set or added). */
  private write(tx: PgTransaction, round: Map<string, KeyState>): void {
    const deleted: string[] = [];
    const shapes = new Map<string, { cols: Array<{ c: number; add: boolean }>; rows: KeyState[] }>();
    for (const s of round.values()) {
      if (s.deleted) deleted.push(s.key);
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
    if (deleted.length > 0) tx.add(deleteSql(this.t, deleted));
    for (const { cols, rows } of shapes.values()) {
      const columns: UpsertColumn[] = cols.map(({ c, add }) => {
        const col = this.columns[c] as PreparedColumn;
        const values = new Array<string | null>(rows.length);
        for (let r = 0; r < rows.length; r++) {
          const v = (rows[r] as KeyState).values[c] as SqlValue;
          values[r] = add ? pgText(v, col.type, col.where) : (v as string | null);
        }
        return { name: q(col.name), type: PG_TYPES[col.type], add, values };
      });
      tx.add(upsertSql(this.t, rows.map((s) => s.key), columns));
    }
  }
}

/** The view without a views file: table `events`, one row per event, its body as jsonb. */
export class EventsProjection implements Projection {
  applied: PositionMap = {};
  readonly name = EVENTS_VIEW;
  private readonly idOf = compileFallbackPath(['header.eventId', 'id']);
  private readonly typeOf = compileFallbackPath(DEFAULT_TYPE_PATHS);
  private readonly keyOf = compileFallbackPath(DEFAULT_KEY_PATHS);
  private readonly timeOf = compileFallbackPath(['header.createdTimestamp', 'time']);

  constructor(private readonly schema: string) {}

  /** Holds the batch's one INSERT; it goes with the commit. */
  apply(tx: PgTransaction, items: ViewEvent[], todo: number[], onBad: BadEventHandler): Promise<void> {
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
    if ((cols[0] as unknown[]).length > 0) tx.add(eventsInsertSql(this.schema, cols));
    return Promise.resolve();
  }
}
