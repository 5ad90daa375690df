import { mkdtempSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { JsonObject } from '../../src/core/component.js';
import { openCommandLog } from '../../src/log/command-log.js';
import type { LogWriter } from '../../src/log/writer.js';
import { parseViews } from '../../src/views/definition.js';
import { PgViewStore, readPgViewsApplied } from '../../src/views/pg-store.js';
import { startRebuild, type Rebuild } from '../../src/views/rebuild.js';
import type { ViewEvent } from '../../src/views/store.js';
import { eventually } from '../helpers/eventually.js';
import { URL_ } from '../helpers/pg-views.js';
import { service, uniqueName } from '../helpers/services.js';

const up = await service('postgres');

const stores: PgViewStore[] = [];
const builds: Rebuild[] = [];
const writers: LogWriter[] = [];
const schemas: string[] = [];
let admin: pg.Client;

beforeAll(async () => {
  if (!up) return;
  admin = new pg.Client({ connectionString: URL_ });
  await admin.connect();
});
afterEach(async () => {
  for (const b of builds.splice(0)) await b.stop();
  for (const s of stores.splice(0)) await s.close();
  for (const w of writers.splice(0)) await w.close();
});
afterAll(async () => {
  if (!up) return;
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  await admin.end();
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
const NEW = OLD.replace('columns: { name: payload.name }', 'columns: { name: payload.name, price: { path: payload.price, type: integer } }');

interface Setup {
  dir: string;
  schema: string;
  log: string;
  source: string;
  append(events: JsonObject[]): Promise<ViewEvent[]>;
}

async function setup(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-pg-rebuild-'));
  const log = join(dir, 'events.log');
  const writer = await (await openCommandLog(log)).openWriter({ fsync: 'never', warn: () => undefined });
  writers.push(writer);
  const source = `log:${writer.logId}`;
  const schema = uniqueName('cqp_rb');
  schemas.push(schema);
  return {
    dir,
    schema,
    log,
    source,
    async append(events) {
      const { firstSeq } = await writer.appendBatch(events.map((e) => ({ bytes: JSON.stringify(e) })));
      return events.map((event, i) => ({ event, position: { source, n: String(firstSeq + i) } }));
    },
  };
}

async function open(s: Setup, yaml: string, beside: boolean, warnings: string[] = [], dropRemoved = false): Promise<PgViewStore> {
  writeFileSync(join(s.dir, 'views.yaml'), yaml);
  const store = await PgViewStore.open({ url: URL_, schema: s.schema, views: parseViews(yaml, join(s.dir, 'views.yaml')), beside, dropRemoved, warn: (m) => warnings.push(m) });
  stores.push(store);
  return store;
}

function build(s: Setup, store: PgViewStore, warnings: string[], mode: 'fail' | 'skip' = 'fail'): Rebuild {
  const b = startRebuild(store, { log: s.log, warn: (m) => warnings.push(m), mode });
  builds.push(b);
  return b;
}

async function close(store: PgViewStore): Promise<void> {
  stores.splice(stores.indexOf(store), 1);
  await store.close();
}

async function rows(sql: string): Promise<unknown[]> {
  return (await admin.query(sql)).rows;
}

const creates = (from: number, n: number): JsonObject[] =>
  Array.from({ length: n }, (_, i) => ev('create', `k${from + i}`, { name: `n${from + i}`, price: from + i, bucket: (from + i) % 2 ? 'odd' : 'even', one: 1 }));

const fail = (index: number, message: string): never => {
  throw new Error(`event ${index}: ${message}`);
};

describe.skipIf(!up)('a changed PostgreSQL view built beside the live one', () => {
  test('the live version is served and kept up to date until the new one, complete, is renamed into its place', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    await first.applyBatch(await s.append(creates(0, 2000)), fail);
    await close(first);

    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.reason, p.frozen])).toEqual([['ice', 'changed', false]]);
    expect(warnings).toEqual([]);
    const t = `"${s.schema}"`;
    expect(await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)).toEqual([{ n: 2000 }]);
    expect(main.applied()).toEqual({ [s.source]: '2000' });
    const defs = parseViews(NEW, join(s.dir, 'views.yaml'));
    expect(await readPgViewsApplied(URL_, s.schema, defs, true)).toEqual({ [s.source]: '2000' });
    expect(await readPgViewsApplied(URL_, s.schema, defs, false)).toEqual({});
    build(s, main, warnings);
    expect(warnings[0]).toBe('rebuilding ice (definition changed) beside the live one');
    // Live batches go on meanwhile; each reaches the old version, and the reader never sees the view shrink.
    let next = 2000;
    let deleted = 0;
    while (main.pending.length > 0 && next < 4000) {
      await main.applyBatch([...(await s.append([ev('delete', `k${deleted}`)])), ...(await s.append(creates(next, 20)))], fail);
      deleted++;
      next += 20;
      const [{ n }] = (await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)) as [{ n: number }];
      expect(n).toBeGreaterThanOrEqual(next - deleted);
    }
    await eventually(() => main.pending.length === 0, { what: 'the new version swapped in', timeoutMs: 60_000 });
    await main.applyBatch(await s.append(creates(next, 5)), fail);
    next += 5;
    const kept = next - deleted;
    const sum = (next * (next - 1)) / 2 - (deleted * (deleted - 1)) / 2;
    expect(await rows(`SELECT count(*)::int AS n, sum(price)::bigint::text AS p FROM ${t}.ice`)).toEqual([{ n: kept, p: String(sum) }]);
    expect(await rows(`SELECT id, n::int FROM ${t}.counts ORDER BY id`)).toEqual([
      { id: 'even', n: Math.ceil(next / 2) },
      { id: 'odd', n: Math.floor(next / 2) },
    ]);
    expect(warnings.some((w) => /^swapped in the new version of ice at event \d+/.test(w))).toBe(true);
    // Nothing of the version built beside is left: its table, positions and record are the view's now.
    expect(await rows(`SELECT table_name FROM information_schema.tables WHERE table_schema = '${s.schema}' ORDER BY 1`)).toEqual([
      { table_name: 'counts' },
      { table_name: 'cqp_positions' },
      { table_name: 'cqp_views' },
      { table_name: 'ice' },
    ]);
    expect(await rows(`SELECT DISTINCT view FROM ${t}.cqp_positions ORDER BY 1`)).toEqual([{ view: 'counts' }, { view: 'ice' }]);
    expect(await rows(`SELECT indexname FROM pg_indexes WHERE schemaname = '${s.schema}' AND tablename = 'ice'`)).toEqual([{ indexname: 'ice_pkey' }]);
    await close(main);
    const again = await open(s, NEW, true);
    expect(again.pending).toEqual([]);
    // A second change of the same view swaps in again (the names the first swap left are free).
    await close(again);
    const third = await open(s, NEW.replace('type: integer', 'type: real'), true);
    build(s, third, []);
    await eventually(() => third.pending.length === 0, { what: 'the third version swapped in', timeoutMs: 60_000 });
    expect(await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)).toEqual([{ n: kept }]);
  });

  test('live views built from another log are kept: nothing is built beside them, never swapped for a version holding less', async () => {
    const s = await setup();
    const other = await setup();
    other.schema = s.schema;
    const first = await open(s, OLD, true);
    await first.applyBatch(await other.append(creates(0, 50)), fail);
    await close(first);
    await s.append(creates(100, 3));
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    const b = build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('not rebuilding') || w.startsWith('swapped in')), { what: 'the build refused (or, wrongly, swapped in)' });
    expect(warnings.filter((w) => w.startsWith('swapped in'))).toEqual([]);
    expect(warnings.find((w) => w.startsWith('not rebuilding'))).toMatch(
      new RegExp(`^not rebuilding ice beside the live views: the live views were built from another log \\(they hold positions of ${other.source}; this sink follows ${s.source}\\)`),
    );
    await b.stop();
    expect(main.pending).toHaveLength(1);
    const t = `"${s.schema}"`;
    expect(await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)).toEqual([{ n: 50 }]);
    expect(await rows(`SELECT column_name FROM information_schema.columns WHERE table_schema = '${s.schema}' AND table_name = 'ice' AND column_name = 'price'`)).toEqual([]);
  });

  test('a build stopped halfway goes on from its own stored position at the next start', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    for (let i = 0; i < 10; i++) await first.applyBatch(await s.append(creates(i * 3000, 3000)), fail);
    await close(first);
    const main = await open(s, NEW, true);
    const b = build(s, main, []);
    const t = `"${s.schema}"`;
    await eventually(async () => (await rows(`SELECT n FROM ${t}.cqp_positions WHERE view = 'cqp_next_ice'`)).length > 0, { what: 'a position of the build stored', timeoutMs: 60_000 });
    await b.stop();
    builds.splice(builds.indexOf(b), 1);
    const [stored] = (await rows(`SELECT n FROM ${t}.cqp_positions WHERE view = 'cqp_next_ice'`)) as Array<{ n: string }>;
    await close(main);
    if (Number(stored?.n) >= 30_000) return; // the build finished before it could be stopped: nothing to resume
    expect(await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)).toEqual([{ n: 30_000 }]);
    const warnings: string[] = [];
    const again = await open(s, NEW, true, warnings);
    build(s, again, warnings);
    await eventually(() => again.pending.length === 0, { what: 'the resumed build swapped in', timeoutMs: 60_000 });
    const from = warnings.find((w) => w.includes('going on from event'));
    expect(Number(/going on from event (\d+)/.exec(from ?? '')?.[1])).toBeGreaterThanOrEqual(Number(stored?.n));
    expect(await rows(`SELECT count(*)::int AS n, count(price)::int AS p FROM ${t}.ice`)).toEqual([{ n: 30_000, p: 30_000 }]);
  });

  test('a new version that cannot apply an event fails its build: the live one stays, the reason is said, the next start tries again', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    await first.applyBatch(await s.append([...creates(0, 5), ev('create', 'bad', { name: 'x', price: 'not a number', bucket: 'odd', one: 1 }), ...creates(5, 5)]), fail);
    await close(first);
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('rebuilding ice failed')), { what: 'the failure reported' });
    expect(warnings.find((w) => w.startsWith('rebuilding ice failed'))).toMatch(/event 6 of the log: view cqp_next_ice: .*the live version stays.*the next start of the sink tries again/);
    const t = `"${s.schema}"`;
    expect(await rows(`SELECT column_name FROM information_schema.columns WHERE table_schema = '${s.schema}' AND table_name = 'ice' ORDER BY 1`)).toEqual([{ column_name: 'id' }, { column_name: 'name' }]);
    await main.applyBatch(await s.append(creates(10, 1)), fail);
    expect(await rows(`SELECT count(*)::int AS n FROM ${t}.ice`)).toEqual([{ n: 12 }]);
    await close(main);
    const retry: string[] = [];
    const again = await open(s, NEW, true, retry);
    build(s, again, retry, 'skip');
    await eventually(() => again.pending.length === 0, { what: 'the retried build swapped in under skip' });
    expect(retry.find((w) => w.startsWith('swapped in'))).toMatch(/\(1 events it could not apply skipped, as --on-error skip says; the first: event 6: view cqp_next_ice: /);
    // The event the new version cannot apply is skipped whole: its row is not there.
    expect(await rows(`SELECT count(*)::int AS n, count(price)::int AS p FROM ${t}.ice`)).toEqual([{ n: 11, p: 11 }]);
  });

  test('a swap that cannot be made rolls back whole: the live views stay as they were, and the reason is said', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    await first.applyBatch(await s.append(creates(0, 50)), fail);
    await close(first);
    const added = `${OLD}  - table: extra\n    columns: { name: payload.name }\n    on: { create: upsert }\n`;
    const warnings: string[] = [];
    const main = await open(s, added, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.reason])).toEqual([['extra', 'new']]);
    // Someone takes the view's name while it is built.
    await admin.query(`CREATE TABLE "${s.schema}".extra (x int)`);
    build(s, main, warnings);
    await eventually(() => warnings.find((w) => w.startsWith('rebuilding extra failed')), { what: 'the failed swap reported' });
    expect(warnings.find((w) => w.startsWith('rebuilding extra failed'))).toContain('table "extra" already exists');
    expect(await rows(`SELECT column_name FROM information_schema.columns WHERE table_schema = '${s.schema}' AND table_name = 'extra'`)).toEqual([{ column_name: 'x' }]);
    expect(await rows(`SELECT count(*)::int AS n FROM "${s.schema}".ice`)).toEqual([{ n: 50 }]);
    expect(await rows(`SELECT count(*)::int AS n FROM "${s.schema}".cqp_next_extra`)).toEqual([{ n: 50 }]);
  });

  test('a removed view is kept as it stands, and said so, until --drop-removed-views', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    await first.applyBatch(await s.append(creates(0, 5)), fail);
    await close(first);
    const only = OLD.slice(0, OLD.indexOf('  - table: counts'));
    const warnings: string[] = [];
    await close(await open(s, only, true, warnings));
    expect(warnings).toEqual(['kept view counts as it stands, no longer updated: it is no longer in the views file; run the sink once with --drop-removed-views to drop it']);
    expect(await rows(`SELECT count(*)::int AS n FROM "${s.schema}".counts`)).toEqual([{ n: 2 }]);
    const dropped: string[] = [];
    await close(await open(s, only, true, dropped, true));
    expect(dropped).toEqual(['dropped view counts: it is no longer in the views file (--drop-removed-views)']);
    expect(await rows(`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = '${s.schema}' AND table_name = 'counts'`)).toEqual([{ n: 0 }]);
  });

  test('a handler view: the init() of the new module runs on tables of its own beside the live ones, moved into place at the swap', async () => {
    const s = await setup();
    const module = (per: number, extra: string): string => `export default {
  async init(sql) { await sql.run('CREATE TABLE totals (type text PRIMARY KEY, n bigint NOT NULL${extra})'); },
  async handle(event, sql) {
    await sql.run('INSERT INTO totals (type, n) VALUES ($1, ${per}) ON CONFLICT (type) DO UPDATE SET n = totals.n + ${per}', event.header.eventName[0]);
  },
};
`;
    writeFileSync(join(s.dir, 'totals.mjs'), module(1, ''));
    const yaml = 'views:\n  - table: totals\n    handler: ./totals.mjs\n';
    const first = await open(s, yaml, true);
    await first.applyBatch(await s.append(creates(0, 1000)), fail);
    await close(first);
    writeFileSync(join(s.dir, 'totals.mjs'), module(10, ', extra text'));
    const warnings: string[] = [];
    const main = await open(s, yaml, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.reason, p.frozen])).toEqual([['totals', 'changed', false]]);
    const t = `"${s.schema}"`;
    build(s, main, warnings);
    // The live version is kept up to date by the previous module (its text kept with the view) meanwhile.
    let next = 1000;
    while (main.pending.length > 0 && next < 3000) {
      await main.applyBatch(await s.append(creates(next, 20)), fail);
      next += 20;
      const [row] = (await rows(`SELECT n::int AS n, (SELECT count(*)::int FROM information_schema.columns WHERE table_schema = '${s.schema}' AND table_name = 'totals' AND column_name = 'extra') AS extra FROM ${t}.totals`)) as [{ n: number; extra: number }];
      expect(row.n).toBe(row.extra === 1 ? next * 10 : next);
      await sleep(10);
    }
    await eventually(() => main.pending.length === 0, { what: 'the new version swapped in', timeoutMs: 60_000 });
    await main.applyBatch(await s.append(creates(next, 5)), fail);
    next += 5;
    expect(await rows(`SELECT type, n::int AS n, extra FROM ${t}.totals`)).toEqual([{ type: 'create', n: next * 10, extra: null }]);
    expect(warnings.some((w) => /^swapped in the new version of totals at event \d+/.test(w))).toBe(true);
    expect(await rows(`SELECT nspname FROM pg_namespace WHERE nspname = '${s.schema}_cqp_next'`)).toEqual([]);
    expect(await rows(`SELECT DISTINCT view FROM ${t}.cqp_positions`)).toEqual([{ view: 'totals' }]);
    await close(main);
    const again = await open(s, yaml, true);
    expect(again.pending).toEqual([]);
  });

  test('a schema made by an older cqp (no definitions kept): the live version is served as it stands until the swap', async () => {
    const s = await setup();
    const first = await open(s, OLD, true);
    await first.applyBatch(await s.append(creates(0, 100)), fail);
    await close(first);
    await admin.query(`ALTER TABLE "${s.schema}".cqp_views DROP COLUMN definition`);
    const warnings: string[] = [];
    const main = await open(s, NEW, true, warnings);
    expect(main.pending.map((p) => [p.definition.table, p.frozen])).toEqual([['ice', true]]);
    // The views it keeps up to date go on from their positions; the frozen one is left out of them.
    expect(main.views).toEqual(['counts']);
    build(s, main, warnings);
    expect(warnings[0]).toMatch(/^rebuilding ice \(definition changed\) beside the live one \(the live version is served as it stands until then/);
    await eventually(() => main.pending.length === 0, { what: 'the new version swapped in' });
    expect(await rows(`SELECT count(*)::int AS n, count(price)::int AS p FROM "${s.schema}".ice`)).toEqual([{ n: 100, p: 100 }]);
  });

  test('where it cannot be built beside (a worker of a group), a changed view is rebuilt in place, and the warning says why', async () => {
    const s = await setup();
    const first = await open(s, OLD, false);
    await first.applyBatch(await s.append(creates(0, 10)), fail);
    await close(first);
    const warnings: string[] = [];
    writeFileSync(join(s.dir, 'views.yaml'), NEW);
    const why = 'the workers of group g each apply only the partitions they hold, so none builds a new version beside the live one';
    const store = await PgViewStore.open({ url: URL_, schema: s.schema, views: parseViews(NEW, join(s.dir, 'views.yaml')), beside: false, inPlaceWhy: why, group: 'g', warn: (m) => warnings.push(m) });
    stores.push(store);
    expect(store.pending).toEqual([]);
    expect(warnings).toEqual([`rebuilding ice in place, from empty (definition changed): readers see it refill; ${why}`]);
    expect(await rows(`SELECT count(*)::int AS n FROM "${s.schema}".ice`)).toEqual([{ n: 0 }]);
  });
});
