/**
 * One batch of a PostgreSQL views store, inside its transaction: which of its events each view still
 * needs (by the positions it holds), the views' writes, their new positions and the COMMIT in one round
 * trip; for a group of workers, the fence that refuses a batch of a source another worker took over.
 */
import { CqpError } from '../core/errors.js';
import { compareN, hasParts, holds, isApplied } from '../core/position.js';
import type { PositionMap } from '../core/position.js';
import type { PgClient } from './pg-connection.js';
import { positionsGuardSql, positionsUpsertSql } from './pg-sql.js';
import type { PgTransaction, Projection } from './pg-transaction.js';
import { compareFast, positionRanges, type BadEventHandler, type ViewEvent } from './store.js';

/** Raises each source of `target` to the position `map` holds when larger. */
export function raise(target: PositionMap, map: PositionMap): void {
  for (const source in map) {
    const n = map[source] as string;
    const t = target[source];
    if (t === undefined || compareFast(n, t) > 0) target[source] = n;
  }
}

/** The statement that checks, inside the batch's transaction, that the views' stored positions of `sources` are those in memory. */
export function positionsGuard(schema: string, projections: readonly Projection[], sources: string[]): string | undefined {
  const expected: Record<string, PositionMap> = {};
  for (const p of projections) {
    const mine: PositionMap = {};
    for (const source of sources) if (p.applied[source] !== undefined) mine[source] = p.applied[source];
    if (Object.keys(mine).length > 0) expected[p.name] = mine;
  }
  return positionsGuardSql(
    schema,
    projections.map((p) => p.name),
    sources,
    expected,
  );
}

/** The store a batch is written to. */
export interface BatchTarget {
  readonly schema: string;
  /** The views, each with the positions it holds (updated here once the batch commits). */
  readonly projections: readonly Projection[];
  /** The group of workers writing the schema together, if any (see `fence`). */
  readonly group: string | undefined;
  /** Where, for messages. */
  readonly where: string;
  /** Per source, the largest position handed to any view so far: raised here. */
  readonly reached: PositionMap;
  /** Opens the batch's transaction; `read`: the positions were read inside it (not checked by a guard). */
  begin(client: PgClient, sources: string[]): Promise<{ tx: PgTransaction; read: boolean }>;
}

/**
 * Writes a batch in one transaction: each view applies the events it does not hold yet, and its new
 * positions are stored with the COMMIT. `seen`: the positions the store held before this batch's tries.
 */
export async function writeBatch(
  target: BatchTarget,
  client: PgClient,
  items: ViewEvent[],
  onBad: BadEventHandler,
  through: PositionMap | undefined,
  seen: PositionMap[],
): Promise<void> {
  const ranges = positionRanges(items);
  const first = new Map([...ranges].map(([source, range]) => [source, range.min]));
  for (const source in through) {
    const n = through[source] as string;
    const range = ranges.get(source);
    if (range === undefined) ranges.set(source, { min: n, max: n });
    else if (compareFast(n, range.max) > 0) range.max = n;
  }
  for (const [source, range] of ranges) raise(target.reached, { [source]: range.max });
  const { tx, read } = await target.begin(client, [...ranges.keys()]);
  // Positions read in this transaction (not checked by the guard): in a group, another worker may have moved them.
  if (target.group !== undefined && read) await fence(target, client, seen, first);
  const moved: PositionMap[] = [];
  const rows: Array<[string, string, string]> = [];
  for (const p of target.projections) {
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
  await tx.commit(rows.length === 0 ? undefined : positionsUpsertSql(target.schema, rows));
  target.projections.forEach((p, v) => Object.assign(p.applied, moved[v]));
}

/**
 * A group's fence, with the stored positions just read inside the batch's transaction: a source whose
 * stored position another worker moved since this store saw it is no longer this worker's, unless
 * the batch starts at that position or past it (the source took it over from there). Such a batch is rolled back,
 * and the store stops: it is restarted and resumes from the stored positions.
 */
async function fence(target: BatchTarget, client: PgClient, seen: PositionMap[], first: Map<string, string>): Promise<void> {
  for (const [v, p] of target.projections.entries()) {
    for (const [source, n] of first) {
      const stored = p.applied[source];
      const before = seen[v]?.[source];
      if (stored === undefined || stored === before) continue;
      // A batch starting at the stored position, or past it, comes from a reader that started there: a
      // worker taking a partition reads it again from the stored event, which a stage may drop (a
      // `where` changed by a reload). A reader that lost the partition goes on from where this store
      // stood, before the stored position: the events up to it passed the same stages for the worker
      // that committed them, so its batch holds them, and starts at or before it.
      if (compareN(n.split('.')[0] as string, stored.split('.')[0] as string) >= 0) continue;
      await client.query('ROLLBACK').catch(() => undefined);
      throw new CqpError(
        'FENCED',
        `${target.where}: fenced: another worker of group ${target.group ?? ''} has committed ${source} up to ${stored} since this one saw ${before ?? 'nothing'} of it ` +
          `(this worker lost that partition's lease); the batch from ${n} was rolled back, nothing of it applied`,
      );
    }
  }
}
