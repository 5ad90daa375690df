import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, cqpAsync, shellCommand, spawnCli, type CliResult } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { noProcessesLeftIn } from '../helpers/processes.js';
import { appliedIn } from '../helpers/views.js';

interface DemoEvent {
  header: { eventId: string; eventType: string[]; eventName: string[]; createdTimestamp: string; rel: { id: string } };
  payload: { name?: string; price?: number; productId?: string; qty?: number };
}

interface Logged {
  seq: number;
  time: string;
  event: DemoEvent;
}

// v2: a new filter (deletes are dropped), a new column (each sale's total) and two views over them.
const VIEWS = `views:
  - table: sales_by_product
    key: { column: product_id, path: payload.productId }
    columns:
      units: { type: integer }
      revenue: { type: real }
    on:
      sale.ice_cream: { increment: { units: payload.qty, revenue: payload.total } }
  - table: ice_creams
    key: header.rel.id
    columns:
      name: payload.name
      price: { path: payload.price, type: real }
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
`;

const STAGES = `stages:
  - { name: no-deletes, filter: where, with: { expr: "e.header.eventType[0] !== 'delete'" } }
  - { name: total, filter: map, with: { expr: "e.payload.total = e.payload.qty === undefined ? undefined : e.payload.qty * e.payload.price" } }
`;

let root: string;
let log: string;
let logged: Logged[];

function sh(command: string, cwd: string): void {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} failed: ${r.stderr}`);
}

/** A folder holding a v2 pipeline (stdin source, the v2 stages) with these sinks, and its views file. */
function pipelineIn(name: string, sinks: string, stages = STAGES): { dir: string; file: string; db: string } {
  const dir = join(root, name);
  mkdirSync(join(dir, 'views'), { recursive: true });
  writeFileSync(join(dir, 'views/v2.yaml'), VIEWS);
  const file = join(dir, 'v2.yaml');
  writeFileSync(file, `name: v2\nsource: { type: stdin }\n${stages}sinks:\n${sinks}`);
  return { dir, file, db: join(dir, 'out/v2.db') };
}

const VIEW_SINK = '  - { name: views, type: sqlite, db: out/v2.db, views: views/v2.yaml }\n';
const KINESIS_SINK = '  - { name: publish, type: kinesis, stream: ice-creams, endpoint: "http://127.0.0.1:9" }\n';

function replay(args: string[], cwd = root): Promise<CliResult> {
  return cqpAsync(['replay', ...args], { cwd });
}

/** The views v2 should hold after `events`, computed in plain JS from the logged events. */
function expectedViews(events: Logged[]): { sales: unknown[]; creams: unknown[] } {
  const sales = new Map<string, { units: number; revenue: number }>();
  const creams = new Map<string, { name: string | null; price: number | null }>();
  for (const { event: e } of events) {
    if (e.header.eventType[0] === 'delete') continue;
    const type = e.header.eventName[0];
    if (type === 'sale.ice_cream') {
      const row = sales.get(e.payload.productId as string) ?? { units: 0, revenue: 0 };
      row.units += e.payload.qty as number;
      row.revenue += (e.payload.qty as number) * (e.payload.price as number);
      sales.set(e.payload.productId as string, row);
    } else if (type === 'create.ice_cream' || type === 'update.ice_cream') {
      const row = creams.get(e.header.rel.id) ?? { name: null, price: null };
      if (e.payload.name !== undefined) row.name = e.payload.name;
      if (e.payload.price !== undefined) row.price = e.payload.price;
      creams.set(e.header.rel.id, row);
    }
  }
  const byKey = <T>(m: Map<string, T>): Array<[string, T]> => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    sales: byKey(sales).map(([product_id, r]) => ({ product_id, units: r.units, revenue: r.revenue })),
    creams: byKey(creams).map(([id, r]) => ({ id, name: r.name, price: r.price })),
  };
}

function viewRows(db: string): { sales: unknown[]; creams: unknown[] } {
  const conn = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return {
      sales: conn.prepare('SELECT product_id, units, revenue FROM sales_by_product ORDER BY product_id').all(),
      creams: conn.prepare('SELECT id, name, price FROM ice_creams ORDER BY id').all(),
    };
  } finally {
    conn.close();
  }
}

/** Every row of every table, in key order: two databases with equal dumps hold the same content. */
function dump(db: string): Record<string, unknown[]> {
  const conn = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const tables = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[];
    return Object.fromEntries(tables.map((t) => [t, conn.prepare(`SELECT * FROM "${t}" ORDER BY 1, 2`).all()]));
  } finally {
    conn.close();
  }
}

/** Names, sizes, mtimes and contents of every file under `dir`. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isFile()) out[name] = `${st.size} ${st.mtimeMs} ${createHash('sha1').update(readFileSync(path)).digest('hex')}`;
  }
  return out;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'cqp-replay-'));
  log = join(root, 'e.log');
  sh(`${shellCommand('source', 'demo --count 200000 --seed 1')} | ${shellCommand('sink', 'log --path e.log')}`, root);
  const cat = await cqpAsync(['log', 'cat', 'e.log', '--meta'], { cwd: root });
  expect(cat.status, cat.stderr).toBe(0);
  logged = cat.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Logged);
  expect(logged).toHaveLength(200_000);
}, 240_000); // 200,000 events logged and read back: a minute or more on a loaded 2-core machine

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('cqp replay', () => {
  it('replays 200k events through a new filter into a new view equal to a fold of the logged events; kinesis is skipped', async () => {
    const p = pipelineIn('full', VIEW_SINK + KINESIS_SINK);
    const r = await replay(['--log', 'e.log', '--pipeline', p.file]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/200,000 events read/);
    expect(r.stderr).toMatch(/views \(sqlite\): [\d,]+ events written, .*v2\.db replaced/);
    expect(r.stderr).toMatch(/publish \(kinesis\): skipped/);
    const want = expectedViews(logged);
    expect(want.sales.length).toBeGreaterThan(100);
    expect(viewRows(p.db)).toEqual(want);
    // The new file is complete on its own: no WAL beside it, nothing left from the build.
    expect(readdirSync(join(p.dir, 'out')).sort()).toEqual(['v2.db']);
  });

  it('--until gives the views as of a seq or an append time', async () => {
    const p = pipelineIn('until', VIEW_SINK);
    const at = logged[109_999] as Logged;
    const cases: Array<{ until: string; upTo: Logged[] }> = [
      { until: '30000', upTo: logged.slice(0, 30_000) },
      { until: '80000', upTo: logged.slice(0, 80_000) },
      { until: at.time, upTo: logged.filter((l) => Date.parse(l.time) <= Date.parse(at.time)) },
    ];
    for (const c of cases) {
      const r = await replay(['--log', log, '--pipeline', p.file, '--until', c.until]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain(`${c.upTo.length.toLocaleString('en-US')} events read`);
      expect(viewRows(p.db), `--until ${c.until}`).toEqual(expectedViews(c.upTo));
    }
  });

  it('--time-field bounds the events by their own time', async () => {
    const p = pipelineIn('time-field', VIEW_SINK);
    const from = '2022-05-30T12:00:00Z';
    const until = '2022-05-30T18:00:00Z';
    const r = await replay(['--log', log, '--pipeline', p.file, '--time-field', 'header.createdTimestamp', '--from', from, '--until', until]);
    expect(r.status, r.stderr).toBe(0);
    const inside = logged.filter((l) => {
      const t = Date.parse(l.event.header.createdTimestamp);
      return t >= Date.parse(from) && t <= Date.parse(until);
    });
    expect(inside.length).toBeGreaterThan(1000);
    expect(viewRows(p.db)).toEqual(expectedViews(inside));
  });

  it('--time-field reads its path as property names, never as code; seq bounds still cut the log', async () => {
    const p = pipelineIn('time-field-quoted', VIEW_SINK);
    const path = 'payload.x"]) || true || (e["y';
    const r = await replay(['--log', log, '--pipeline', p.file, '--from', '195001', '--time-field', path, '--until', '2030-01-01T00:00:00Z']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('5,000 events read');
    expect(r.stderr).toMatch(/time-field: 5,000 in, 0 out/);
    expect(viewRows(p.db)).toEqual({ sales: [], creams: [] });
  });

  it('two replays give identical rows, and a log sink is rebuilt with the same events', async () => {
    const p = pipelineIn('twice', `${VIEW_SINK}  - { name: copy, type: log, path: out/copy.log }\n`);
    const dumps: Array<Record<string, unknown[]>> = [];
    const copies: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await replay(['--log', log, '--pipeline', p.file, '--until', '30000']);
      expect(r.status, r.stderr).toBe(0);
      dumps.push(dump(p.db));
      const cat = await cqpAsync(['log', 'cat', join(p.dir, 'out/copy.log')]);
      expect(cat.status, cat.stderr).toBe(0);
      copies.push(cat.stdout);
    }
    expect(dumps[1]).toEqual(dumps[0]);
    expect(Object.keys(dumps[0] ?? {})).toEqual(expect.arrayContaining(['ice_creams', 'sales_by_product']));
    expect(viewRows(p.db)).toEqual(expectedViews(logged.slice(0, 30_000)));
    expect(copies[1]).toBe(copies[0]);
    const kept = logged.slice(0, 30_000).filter((l) => l.event.header.eventType[0] !== 'delete');
    expect((copies[0] ?? '').split('\n').filter((l) => l !== '')).toHaveLength(kept.length);
  });

  it('kill -9 mid-replay leaves the old view byte-identical; the next replay clears the leftovers and completes', async () => {
    const p = pipelineIn('kill', VIEW_SINK);
    const first = await replay(['--log', log, '--pipeline', p.file, '--until', '1000']);
    expect(first.status, first.stderr).toBe(0);
    const before = readFileSync(p.db);

    const child = spawnCli('cqp', ['replay', '--log', log, '--pipeline', p.file], { cwd: root });
    const done = collect(child);
    const temp = `${p.db}.replay-${child.pid}`;
    // Mid-way: the new database is being written.
    await eventually(() => appliedIn(temp) >= 2000, { timeoutMs: 20_000, everyMs: 20, what: 'the replay to write its new database' });
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    expect(readFileSync(p.db).equals(before)).toBe(true);
    expect(existsSync(`${p.db}-wal`)).toBe(false);
    // The stages it started notice their input is gone and exit.
    await noProcessesLeftIn(root, { timeoutMs: 20_000, what: 'the killed replay’s stages to exit' });
    expect(existsSync(temp)).toBe(true);

    const second = await replay(['--log', log, '--pipeline', p.file, '--until', '40000']);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toContain('left by an interrupted replay');
    expect(readdirSync(join(p.dir, 'out'))).toEqual(['v2.db']);
    expect(viewRows(p.db)).toEqual(expectedViews(logged.slice(0, 40_000)));
  });

  it('without stages, each sink reads the log itself: the views and a copy as of --until; a kill -9 leaves no sink running', async () => {
    const p = pipelineIn('direct', `${VIEW_SINK}  - { name: copy, type: file, path: out/copy.ndjson }\n`, '');
    // Without the v2 stages there is no total to add up: the ice_creams view alone.
    writeFileSync(join(p.dir, 'views/v2.yaml'), VIEWS.slice(VIEWS.indexOf('  - table: ice_creams')).replace(/^/, 'views:\n'));
    const r = await replay(['--log', log, '--pipeline', p.file, '--until', '25000']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('25,000 events read');
    expect(r.stderr).toContain('views (sqlite): 25,000 events written, at seq 25000 of 25000,');
    // Without the v2 filter, deletes apply: a fold of the first 25,000 logged events.
    const creams = new Map<string, { name: string | null; price: number | null }>();
    for (const { event: e } of logged.slice(0, 25_000)) {
      const type = e.header.eventName[0];
      if (type === 'delete.ice_cream') creams.delete(e.header.rel.id);
      else if (type === 'create.ice_cream' || type === 'update.ice_cream') {
        const row = creams.get(e.header.rel.id) ?? { name: null, price: null };
        if (e.payload.name !== undefined) row.name = e.payload.name;
        if (e.payload.price !== undefined) row.price = e.payload.price;
        creams.set(e.header.rel.id, row);
      }
    }
    const expected = [...creams].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, row]) => ({ id, ...row }));
    expect(dump(p.db).ice_creams).toEqual(expected);
    const copy = readFileSync(join(p.dir, 'out/copy.ndjson'), 'utf8').trimEnd().split('\n');
    expect(copy.map((l) => JSON.parse(l) as DemoEvent)).toEqual(logged.slice(0, 25_000).map((l) => l.event));

    const before = readFileSync(p.db);
    const child = spawnCli('cqp', ['replay', '--log', log, '--pipeline', p.file], { cwd: root });
    const done = collect(child);
    const temp = `${p.db}.replay-${child.pid}`;
    await eventually(() => appliedIn(temp) >= 2000, { timeoutMs: 20_000, everyMs: 20, what: 'the replay to write its new database' });
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    // The sinks see their supervisor go (its pipe ends) and stop.
    await noProcessesLeftIn(root, { timeoutMs: 5000, what: 'the killed replay’s sinks to exit' });
    expect(readFileSync(p.db).equals(before)).toBe(true);
  });

  it('a replay whose stage fails leaves the target byte-identical and no new files', async () => {
    const bad = (logged[20_000] as Logged).event.header.eventId;
    const p = pipelineIn('fails', VIEW_SINK, `${STAGES}  - { name: breaks, filter: where, with: { expr: "e.header.eventId !== '${bad}' || e.no.such.field" } }\n`);
    mkdirSync(join(p.dir, 'out'));
    writeFileSync(p.db, 'the previous views');
    const r = await replay(['--log', log, '--pipeline', p.file, '--until', '30000']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/failed; .*v2\.db unchanged/);
    expect(readFileSync(p.db, 'utf8')).toBe('the previous views');
    expect(readdirSync(join(p.dir, 'out'))).toEqual(['v2.db']);
  });

  it('--dry-run prints the range and what happens to each sink, and touches nothing', async () => {
    const p = pipelineIn('dry', `${VIEW_SINK}  - { name: out, type: stdout }\n${KINESIS_SINK}`);
    const before = snapshot(root);
    const r = await replay(['--log', 'e.log', '--pipeline', p.file, '--from', '101', '--until', '5000', '--dry-run']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('4,900 events, seq 101–5000');
    expect(r.stdout).toMatch(/views \(sqlite\): replaced: built into .*v2\.db\.replay-\d+, then renamed over .*v2\.db/);
    expect(r.stdout).toMatch(/out \(stdout\): written/);
    expect(r.stdout).toMatch(/publish \(kinesis\): skipped/);
    expect(snapshot(root)).toEqual(before);
    expect(existsSync(join(p.dir, 'out'))).toBe(false);
  });

  it('bounds that name no record, or a --from after the --until, are refused (exit 2) before anything is touched', async () => {
    const p = pipelineIn('bad-bounds', VIEW_SINK);
    const built = await replay(['--log', log, '--pipeline', p.file, '--until', '1000']);
    expect(built.status, built.stderr).toBe(0);
    const before = snapshot(p.dir);
    const late = (logged[150_000] as Logged).time;
    const early = (logged[1_000] as Logged).time;
    expect(Date.parse(late)).toBeGreaterThan(Date.parse(early));
    const cases: Array<{ args: string[]; says: string }> = [
      { args: ['--until', '0'], says: '--until "0": there is no record 0' },
      { args: ['--from', '-5'], says: '--from "-5": a sequence number is a whole number' },
      { args: ['--until', '2.5'], says: '--until "2.5": a sequence number is a whole number' },
      { args: ['--until', '2022-02-30'], says: '--until "2022-02-30": no such date' },
      { args: ['--from', '2022-13-01'], says: '--from "2022-13-01": no such date' },
      { args: ['--until', '2023-02-29T12:00:00Z'], says: '--until "2023-02-29T12:00:00Z": no such date' },
      { args: ['--from', '5000', '--until', '1000'], says: '--from 5000 is after --until 1000' },
      { args: ['--from', '2030-01-02', '--until', '2030-01-01'], says: '--from 2030-01-02 is after --until 2030-01-01' },
      { args: ['--from', '150001', '--until', early], says: `--from 150001 (appended ${late}) is after --until ${early}` },
      { args: ['--from', late, '--until', '1001'], says: `--from ${late} is after --until 1001 (appended ${early})` },
    ];
    for (const c of cases) {
      const r = await replay(['--log', log, '--pipeline', p.file, ...c.args]);
      expect(r.status, `${c.args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(c.says);
      expect(snapshot(p.dir), c.args.join(' ')).toEqual(before);
    }
  });

  it('a range with no records (an --until before the first append) builds empty views, with stages or without', async () => {
    for (const [name, stages] of [['empty-staged', STAGES], ['empty-direct', '']] as const) {
      const p = pipelineIn(name, VIEW_SINK, stages);
      const r = await replay(['--log', log, '--pipeline', p.file, '--until', '2020-01-01T00:00:00Z']);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('0 events read');
      expect(viewRows(p.db)).toEqual({ sales: [], creams: [] });
    }
  });

  it('the README example: v1 runs live, v2 is replayed from its log, their sales agree', async () => {
    const dir = join(root, 'readme');
    const pipelines = fileURLToPath(new URL('../../pipelines/', import.meta.url));
    for (const f of ['ice-creams.yaml', 'ice-creams-v2.yaml', 'views']) cpSync(join(pipelines, f), join(dir, 'pipelines', f), { recursive: true });
    const v1 = await cqpAsync(['run', 'pipelines/ice-creams.yaml'], { cwd: dir, env: { COUNT: '3000' } });
    expect(v1.status, v1.stderr).toBe(0);
    const r = await replay(['--log', 'pipelines/data/events.log', '--pipeline', 'pipelines/ice-creams-v2.yaml'], dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('3,000 events read');
    const query = async (db: string, sql: string): Promise<unknown[]> => {
      const q = await cqpAsync(['query', join(dir, 'pipelines/data', db), sql, '--json']);
      expect(q.status, q.stderr).toBe(0);
      return q.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as unknown);
    };
    const v1Sales = await query('views.db', 'SELECT product_id, units FROM sales ORDER BY product_id');
    expect(v1Sales.length).toBeGreaterThan(10);
    expect(await query('views-v2.db', 'SELECT product_id, units FROM sales_by_product ORDER BY product_id')).toEqual(v1Sales);
    const cat = await cqpAsync(['log', 'cat', join(dir, 'pipelines/data/events.log')]);
    const events = cat.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as DemoEvent);
    const made = new Set(events.filter((e) => e.header.eventName[0] === 'create.ice_cream').map((e) => e.header.rel.id));
    expect(await query('views-v2.db', 'SELECT count(*) AS n FROM ice_creams_ever')).toEqual([{ n: made.size }]);
  });

  it('refuses a log sink that writes the log being replayed', async () => {
    const p = pipelineIn('own-log', `  - { name: log, type: log, path: ../e.log }\n`);
    const r = await replay(['--log', 'e.log', '--pipeline', p.file]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/sink log writes the log being replayed/);
  });
});
