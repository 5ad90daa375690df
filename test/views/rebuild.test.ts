import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import type { JsonObject } from '../../src/core/component.js';
import { openCommandLog } from '../../src/log/command-log.js';
import type { LogWriter } from '../../src/log/writer.js';
import { parseViews } from '../../src/views/definition.js';
import { listViews } from '../../src/views/query.js';
import { rebuildFileOf, startRebuild, type Rebuild } from '../../src/views/rebuild.js';
import { readViewsApplied, ViewStore, type ViewEvent } from '../../src/views/store.js';
import { eventually } from '../helpers/eventually.js';

const stores: ViewStore[] = [];
const builds: Rebuild[] = [];
const writers: LogWriter[] = [];
afterEach(async () => {
  for (const b of builds.splice(0)) await b.stop();
  for (const s of stores.splice(0)) s.close();
  for (const w of writers.splice(0)) await w.close();
});

function ev(type: string, id: string, payload: JsonObject = {}): JsonObject {
  return { header: { eventName: [type], rel: { id } }, payload };
}

const OLD = `views:
  - table: ice
    columns: { name: payload.name }
    on: { create: upsert, delete: delete }
  - table: counts
    key: payload.bucket
    columns: { n: { type: integer } }
    on: { create: { increment: { n: payload.one } } }
`;
const NEW = OLD.replace('columns: { name: payload.name }', 'columns: { name: payload.name, price: { path: payload.price, type: real } }');

interface Setup {
  dir: string;
  db: string;
  log: string;
  writer: LogWriter;
  source: string;
  /** Appends events to the log and gives them with their positions, as the live stream would. */
  append(events: JsonObject[]): Promise<ViewEvent[]>;
}

async function setup(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-rebuild-'));
  const log = join(dir, 'events.log');
  const writer = await (await openCommandLog(log)).openWriter({ fsync: 'never', warn: () => undefined });
  writers.push(writer);
  const source = `log:${writer.logId}`;
  return {
    dir,
    db: join(dir, 'views.db'),
    log,
    writer,
    source,
    async append(events) {
      const { firstSeq } = await writer.appendBatch(events.map((e) => ({ bytes: JSON.stringify(e) })));
      return events.map((event, i) => ({ event, position: { source, n: String(firstSeq + i) } }));
    },
  };
}

async function open(s: Setup, yaml: string, beside: boolean, warnings: string[] = [], dropRemoved = false): Promise<ViewStore> {
  writeFileSync(join(s.dir, 'views.yaml'), yaml);
  const store = await ViewStore.open(s.db, parseViews(yaml, join(s.dir, 'views.yaml')), { beside, dropRemoved, warn: (m) => warnings.push(m) });
  stores.push(store);
  return store;
}

function build(s: Setup, store: ViewStore, warnings: string[], mode: 'fail' | 'skip' = 'fail'): Rebuild {
  const b = startRebuild(store, { log: s.log, warn: (m) => warnings.push(m), mode });
  builds.push(b);
  return b;
}

function query(file: string, sql: string): unknown[] {
  const d = new Database(file, { readonly: true });
  try {
    return d.prepare(sql).all();
  } finally {
    d.close();
  }
}

function close(store: ViewStore): void {
  store.close();
  stores.splice(stores.indexOf(store), 1);
}

const creates = (from: number, n: number): JsonObject[] =>
  Array.from({ length: n }, (_, i) => ev('create', `k${from + i}`, { name: `n${from + i}`, price: from + i, bucket: (from + i) % 2 ? 'odd' : 'even', one: 1 }));

describe('a changed view built beside the live one', () => {
  test('the live version is served and kept up to date until the new one, complete, takes its place', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 500)));
    close(first);

    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.reason, p.frozen])).toEqual([['ice', 'changed', false]]);
    expect(warnings).toEqual([]);
    // The old version is still there, as it was, and the live stream resumes after it, not from zero.
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 500 }]);
    expect(main.applied()).toEqual({ [s.source]: '500' });
    // What the supervisor reads of the database says the same; a sink reading stdin would rebuild in place, from nothing.
    const defs = parseViews(NEW, join(s.dir, 'views.yaml'));
    expect(readViewsApplied(s.db, defs, true)).toEqual({ [s.source]: '500' });
    expect(readViewsApplied(s.db, defs, false)).toEqual({});
    // Live events before the build starts reach the old version (by its stored definition).
    main.applyBatch([...(await s.append([ev('delete', 'k0')])), ...(await s.append(creates(500, 10)))]);
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 509 }]);
    build(s, main, warnings);
    expect(warnings[0]).toBe('rebuilding ice (definition changed) beside the live one');
    await eventually(() => main.pending.length === 0, { what: 'the new version swapped in' });
    main.applyBatch(await s.append(creates(510, 5)));
    expect(query(s.db, 'SELECT count(*) AS n, sum(price) AS p FROM ice')).toEqual([{ n: 514, p: (514 * 515) / 2 }]);
    expect(query(s.db, 'SELECT id, n FROM counts ORDER BY id')).toEqual([{ id: 'even', n: 258 }, { id: 'odd', n: 257 }]);
    expect(main.appliedBy('ice')).toEqual({ [s.source]: '516' });
    expect(warnings.some((w) => /^swapped in the new version of ice at event \d+/.test(w))).toBe(true);
    await eventually(() => !existsSync(rebuildFileOf(s.db)), { what: 'the rebuild database removed once every view is swapped in' });
    // The next start finds the view current: nothing to build.
    close(main);
    const again = await open(s, NEW, true);
    expect(again.pending).toEqual([]);
  });

  test('live views built from another log are kept: nothing is built beside them, never swapped for a version holding less', async () => {
    const s = await setup();
    const other = await setup();
    // The live views hold 50 events of another log (the log the sink follows was replaced since).
    const first = await open(s, OLD, true);
    first.applyBatch(await other.append(creates(0, 50)));
    close(first);
    await s.append(creates(100, 3));
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    expect(main.pending.map((p) => p.definition.table)).toEqual(['ice']);
    const b = build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('not rebuilding') || w.startsWith('swapped in')), { what: 'the build refused (or, wrongly, swapped in)' });
    expect(warnings.filter((w) => w.startsWith('swapped in'))).toEqual([]);
    expect(warnings.find((w) => w.startsWith('not rebuilding'))).toBe(
      `not rebuilding ice beside the live views: the live views were built from another log (they hold positions of ${other.source}; this sink follows ${s.source}), ` +
        'so a version built from this log could never be checked to hold what they hold; the live versions are kept as they stand; ' +
        'to build the views from this log, give the sink a new database (or delete this one)',
    );
    expect(b.activity()).toMatch(/^rebuilding ice failed: not built beside the live views: the live views were built from another log/);
    await b.stop();
    // The live version is whole and of the old definition; nothing was swapped in.
    expect(main.pending).toHaveLength(1);
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 50 }]);
    expect((query(s.db, "SELECT name FROM pragma_table_info('ice')") as Array<{ name: string }>).map((c) => c.name)).not.toContain('price');
  });

  test('a build stopped halfway goes on from its own stored position at the next start', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 300)));
    close(first);
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    // The live version holds a position the log does not have yet: the build cannot catch up and waits at the log's end.
    main.applyBatch([{ event: creates(1000, 1)[0] as JsonObject, position: { source: s.source, n: '100000' } }]);
    const b = build(s, main, warnings);
    await eventually(() => (b.progress()?.applied ?? 0) > 0 || query(rebuildFileOf(s.db), 'SELECT n FROM cqp_positions').length > 0, {
      what: 'the build storing its position',
    });
    await eventually(() => query(rebuildFileOf(s.db), "SELECT n FROM cqp_positions WHERE view = 'ice'")[0], { what: 'the position stored' });
    await b.stop();
    const stored = query(rebuildFileOf(s.db), "SELECT n FROM cqp_positions WHERE view = 'ice'") as Array<{ n: string }>;
    expect(Number(stored[0]?.n)).toBeGreaterThan(0);
    expect(main.pending).toHaveLength(1);
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 301 }]);
    // cqp views: each version with its state, definition and position.
    let printed = '';
    await listViews(s.db, { json: true }, { write: (t: string) => ((printed += t), true), once: () => undefined });
    const listed = printed.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(listed.map((v) => [v.view, v.state, v.position])).toEqual([
      ['counts', 'live', `${s.source} 100000`],
      ['ice', 'live', `${s.source} 100000`],
      ['ice', 'building', `${s.source} ${stored[0]?.n}`],
    ]);
    expect(listed[1]?.definition).not.toBe(listed[2]?.definition);
    close(main);

    const later: string[] = [];
    const next = await open(s, NEW, true, later);
    build(s, next, later);
    await eventually(() => later.find((w) => w.startsWith('rebuilding ice: going on from event')), { what: 'the build going on where it got to' });
    expect(later.find((w) => w.includes('going on'))).toBe(`rebuilding ice: going on from event ${stored[0]?.n}, where the build got to`);
  });

  test('a new version whose handler throws fails its build: the live one stays, the reason is said, the next start tries again', async () => {
    const s = await setup();
    const handler = (extra: string) => `export default {
  init(sql) { sql.run('CREATE TABLE totals (type TEXT PRIMARY KEY, n INTEGER NOT NULL${extra})'); },
  handle(event, sql) {
    if (${extra ? 'event.payload.name === "n7"' : 'false'}) throw new Error('no sevens');
    sql.run('INSERT INTO totals (type, n) VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1', event.header.eventName[0]);
  },
};
`;
    const views = 'views:\n  - table: totals\n    handler: ./totals.mjs\n';
    writeFileSync(join(s.dir, 'totals.mjs'), handler(''));
    const first = await open(s, views, true);
    first.applyBatch(await s.append(creates(0, 20)));
    close(first);
    writeFileSync(join(s.dir, 'totals.mjs'), handler(', extra TEXT'));
    const warnings: string[] = [];
    const main = await open(s, views, true, warnings);
    // The live version is kept up to date by the previous text of the module, kept in the database.
    expect(main.pending.map((p) => p.frozen)).toEqual([false]);
    expect(main.applied()).toEqual({ [s.source]: '20' });
    main.applyBatch(await s.append(creates(20, 2)));
    expect(query(s.db, 'SELECT type, n FROM totals')).toEqual([{ type: 'create', n: 22 }]);
    expect(readdirSync(s.dir).filter((f) => f.includes('cqp-previous'))).toEqual([]);
    build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('rebuilding totals failed')), { what: 'the failure reported' });
    expect(warnings.find((w) => w.startsWith('rebuilding totals failed'))).toMatch(/no sevens.*the live version stays.*the next start of the sink tries again/);
    expect(query(s.db, 'SELECT type, n FROM totals')).toEqual([{ type: 'create', n: 22 }]);
    expect(main.pending).toHaveLength(1);
    close(main);
    const retry: string[] = [];
    const again = await open(s, views, true, retry);
    expect(again.pending).toHaveLength(1);
    // Under --on-error skip the event is skipped, and said so once the new version is in.
    build(s, again, retry, 'skip');
    await eventually(() => again.pending.length === 0, { what: 'the new version swapped in' });
    expect(retry.find((w) => w.startsWith('swapped in'))).toMatch(/\(1 events it could not apply skipped, as --on-error skip says; the first: event 8: view totals: handler failed: no sevens\)$/);
    expect(query(s.db, 'SELECT type, n, extra FROM totals')).toEqual([{ type: 'create', n: 21, extra: null }]);
  });

  test('a swap that cannot be made rolls back whole: the live version stays as it was, and the reason is said', async () => {
    const s = await setup();
    const handler = (tables: string[]) => `export default {
  init(sql) { for (const t of ${JSON.stringify(tables)}) sql.run('CREATE TABLE ' + t + ' (type TEXT PRIMARY KEY, n INTEGER NOT NULL)'); },
  handle(event, sql) { sql.run('INSERT INTO totals (type, n) VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1', event.header.eventName[0]); },
};
`;
    const views = 'views:\n  - table: totals\n    handler: ./totals.mjs\n';
    writeFileSync(join(s.dir, 'totals.mjs'), handler(['totals']));
    const first = await open(s, views, true);
    first.applyBatch(await s.append(creates(0, 10)));
    close(first);
    const before = query(s.db, 'SELECT view, definition_hash FROM cqp_views');
    // Someone else's table, of the name the new version wants too.
    const d = new Database(s.db);
    d.exec('CREATE TABLE mine (x)');
    d.close();
    writeFileSync(join(s.dir, 'totals.mjs'), handler(['totals', 'mine']));
    const warnings: string[] = [];
    const main = await open(s, views, true, warnings);
    build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('rebuilding totals failed')), { what: 'the failed swap reported' });
    expect(warnings.find((w) => w.startsWith('rebuilding totals failed'))).toContain('table "mine" already exists');
    expect(query(s.db, 'SELECT type, n FROM totals')).toEqual([{ type: 'create', n: 10 }]);
    expect(query(s.db, 'SELECT view, definition_hash FROM cqp_views')).toEqual(before);
    expect(main.pending).toHaveLength(1);
  });

  test('a full disk: a live write that finds no room stops the build and removes its database, and the live views go on', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 300)));
    close(first);
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    // The live version holds a position the log does not have yet: the build stays under way.
    main.applyBatch([{ event: creates(1000, 1)[0] as JsonObject, position: { source: s.source, n: '100000' } }]);
    const b = build(s, main, warnings);
    await eventually(() => existsSync(rebuildFileOf(s.db)) && query(rebuildFileOf(s.db), "SELECT n FROM cqp_positions WHERE view = 'ice'")[0], {
      what: 'the build under way',
    });
    // The disk is full for the live database: SQLite refuses to grow it.
    const pages = main.db.pragma('page_count', { simple: true }) as number;
    main.db.pragma(`max_page_count = ${pages}`);
    const more = creates(2000, 400).map((event, i) => ({ event, position: { source: s.source, n: String(100001 + i) } }));
    let full: unknown;
    try {
      main.applyBatch(more);
    } catch (error) {
      full = error;
    }
    expect(String(full)).toMatch(/SQLITE_FULL/);
    expect(await b.giveWay(new Error('some other failure'))).toBe(false);
    expect(await b.giveWay(full)).toBe(true);
    expect(existsSync(rebuildFileOf(s.db))).toBe(false);
    expect(warnings.find((w) => w.startsWith('rebuilding ice stopped'))).toMatch(/disk of the views database is full.*removed to give the space back/);
    expect(b.activity()).toMatch(/failed: stopped: the disk is full/);
    // Once there is room, the live batch (rolled back) is written; only once is space given back.
    main.db.pragma('max_page_count = 1073741823');
    main.applyBatch(more);
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 701 }]);
    expect(await b.giveWay(full)).toBe(false);
    expect(main.pending).toHaveLength(1);
  });

  test('cqp views lists the live views even when the build\'s database cannot be read, and says why', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 3)));
    close(first);
    mkdirSync(rebuildFileOf(s.db));
    let printed = '';
    const warned: string[] = [];
    const exit = await listViews(s.db, { json: true }, { write: (t: string) => ((printed += t), true), once: () => undefined }, (m) => warned.push(m));
    expect(exit).toBe(0);
    const listed = printed.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(listed.map((v) => [v.view, v.state])).toEqual([
      ['counts', 'live'],
      ['ice', 'live'],
    ]);
    expect(warned).toEqual([expect.stringMatching(/^cannot read .*views\.db\.rebuild, where changed views are built beside the live ones \(.+\); the live views are listed without it$/)]);
  });

  test('a view new in the file beside live ones appears only once complete', async () => {
    const s = await setup();
    const one = OLD.slice(0, OLD.indexOf('  - table: counts'));
    const first = await open(s, one, true);
    first.applyBatch(await s.append(creates(0, 50)));
    close(first);
    const warnings: string[] = [];
    const main = await open(s, OLD, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.reason])).toEqual([['counts', 'new']]);
    expect(query(s.db, "SELECT name FROM sqlite_master WHERE name = 'counts'")).toEqual([]);
    build(s, main, warnings);
    expect(warnings[0]).toBe('rebuilding counts (new view) beside the live views');
    await eventually(() => main.pending.length === 0, { what: 'the new view swapped in' });
    expect(query(s.db, 'SELECT id, n FROM counts ORDER BY id')).toEqual([
      { id: 'even', n: 25 },
      { id: 'odd', n: 25 },
    ]);
  });

  test('without a log to read, a changed view is rebuilt in place, and says so', async () => {
    const s = await setup();
    const first = await open(s, OLD, false);
    first.applyBatch(await s.append(creates(0, 5)));
    close(first);
    const warnings: string[] = [];
    const main = await open(s, NEW, false, warnings);
    expect(main.pending).toEqual([]);
    expect(query(s.db, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 0 }]);
    expect(warnings).toEqual([expect.stringMatching(/^rebuilding ice in place, from empty \(definition changed\): readers see it refill; only a sink that reads a command log/)]);
  });
});

describe('a view removed from the views file', () => {
  test('is kept as it stands, and said so, until --drop-removed-views', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 4)));
    close(first);
    const one = OLD.slice(0, OLD.indexOf('  - table: counts'));
    const kept: string[] = [];
    close(await open(s, one, true, kept));
    expect(kept).toEqual(['kept view counts as it stands, no longer updated: it is no longer in the views file; run the sink once with --drop-removed-views to drop it']);
    expect(query(s.db, 'SELECT count(*) AS n FROM counts')).toEqual([{ n: 2 }]);
    const dropped: string[] = [];
    await open(s, one, true, dropped, true);
    expect(dropped).toEqual(['dropped view counts: it is no longer in the views file (--drop-removed-views)']);
    expect(query(s.db, "SELECT name FROM sqlite_master WHERE name = 'counts'")).toEqual([]);
  });
});

async function states(db: string): Promise<string[][]> {
  let printed = '';
  await listViews(db, { json: true }, { write: (t: string) => ((printed += t), true), once: () => undefined });
  return printed
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, string>)
    .map((v) => [v.view as string, v.state as string]);
}

describe('cqp views and a view removed from the views file', () => {
  test('lists it as removed while it is kept, and as live again once it is back in the file', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 4)));
    close(first);
    expect(await states(s.db)).toEqual([
      ['counts', 'live'],
      ['ice', 'live'],
    ]);
    const one = OLD.slice(0, OLD.indexOf('  - table: counts'));
    close(await open(s, one, true));
    expect(await states(s.db)).toEqual([
      ['counts', 'removed (kept until --drop-removed-views)'],
      ['ice', 'live'],
    ]);
    // Put back in the file (unchanged), it is live again; changed, its live version is live and the new one building.
    close(await open(s, OLD, true));
    expect(await states(s.db)).toEqual([
      ['counts', 'live'],
      ['ice', 'live'],
    ]);
    close(await open(s, one, true));
    const changed = await open(s, NEW.replace('n: { type: integer }', 'n: { type: integer }, m: { type: integer }'), true);
    expect(changed.pending.map((p) => p.definition.table)).toEqual(['ice', 'counts']);
    close(changed);
    expect(await states(s.db)).toEqual([
      ['counts', 'live'],
      ['ice', 'live'],
    ]);
  });

  test('a database made before removed views were marked is read and upgraded', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    first.applyBatch(await s.append(creates(0, 4)));
    close(first);
    const d = new Database(s.db);
    d.exec('ALTER TABLE cqp_views DROP COLUMN removed');
    d.close();
    expect(await states(s.db)).toEqual([
      ['counts', 'live'],
      ['ice', 'live'],
    ]);
    const one = OLD.slice(0, OLD.indexOf('  - table: counts'));
    close(await open(s, one, true));
    expect(await states(s.db)).toEqual([
      ['counts', 'removed (kept until --drop-removed-views)'],
      ['ice', 'live'],
    ]);
  });
});
