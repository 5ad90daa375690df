/**
 * Changing a PostgreSQL view while it is read: the new version is built beside the live one in the same
 * schema and renamed into its place, so a reader never sees it empty or half built, and a kill -9 during
 * the build or the swap loses nothing.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openCommandLog } from '../../src/log/command-log.js';
import { BIN, shellCommand } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { URL_ } from '../helpers/pg-views.js';
import { runPipeline, tmpDir } from '../helpers/pipeline.js';
import { service, uniqueName } from '../helpers/services.js';

const up = await service('postgres');
let admin: pg.Client;
const schemas: string[] = [];
beforeAll(async () => {
  if (!up) return;
  admin = new pg.Client({ connectionString: URL_ });
  await admin.connect();
});
afterAll(async () => {
  if (!up) return;
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  await admin.end();
});

function viewsFile(extra = ''): string {
  return `views:
  - table: ice_creams
    columns:
      name: payload.name
      price: { path: payload.price, type: real }
      sold: { type: integer }${extra}
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
      sale.ice_cream: { increment: { sold: payload.qty } }
`;
}
const WITH_COPY = viewsFile('\n      pcopy: { path: payload.price, type: real }');

interface Row {
  id: string;
  name: string | null;
  price: number | null;
  sold: number;
  pcopy?: number | null;
}

/** The log's events, and the ice_creams view folded from them independently of cqp. */
async function foldLog(log: string, copy: boolean): Promise<{ rows: Row[]; deletesAfter: (seq: number) => number }> {
  const l = await openCommandLog(log);
  const view = new Map<string, Row>();
  const deletes: number[] = [];
  try {
    for await (const batch of l.read({})) {
      for (const r of batch) {
        const e = JSON.parse(r.bytes.toString('utf8')) as { header: { eventName: string[]; rel: { id: string } }; payload: Record<string, unknown> };
        const id = e.header.rel.id;
        const type = e.header.eventName[0];
        if (type === 'delete.ice_cream') {
          view.delete(id);
          deletes.push(r.seq);
          continue;
        }
        if (type !== 'create.ice_cream' && type !== 'update.ice_cream' && type !== 'sale.ice_cream') continue;
        const row = view.get(id) ?? { id, name: null, price: null, sold: 0, ...(copy ? { pcopy: null } : {}) };
        if (type === 'sale.ice_cream') row.sold += Number(e.payload.qty);
        else {
          if ('name' in e.payload) row.name = e.payload.name as string;
          if ('price' in e.payload) {
            row.price = e.payload.price as number;
            if (copy) row.pcopy = e.payload.price as number;
          }
        }
        view.set(id, row);
      }
    }
  } finally {
    await l.close();
  }
  return { rows: [...view.values()].sort((a, b) => (a.id < b.id ? -1 : 1)), deletesAfter: (seq) => deletes.filter((s) => s > seq).length };
}

async function tableRows(schema: string, copy: boolean): Promise<Row[]> {
  const r = await admin.query<Row>(`SELECT id, name, price, sold::int AS sold${copy ? ', pcopy' : ''} FROM "${schema}".ice_creams ORDER BY id COLLATE "C"`);
  return r.rows;
}

/** A position the schema holds for `view` (0 when none). */
async function position(schema: string, view: string): Promise<number> {
  try {
    const r = await admin.query<{ n: string }>(`SELECT max(n::bigint)::text AS n FROM "${schema}".cqp_positions WHERE view = $1`, [view]);
    return Number(r.rows[0]?.n ?? 0);
  } catch {
    return 0;
  }
}

async function colNames(schema: string): Promise<string[]> {
  const r = await admin.query<{ c: string }>("SELECT column_name AS c FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'ice_creams'", [schema]);
  return r.rows.map((x) => x.c);
}

/** Fills a command log with demo events. */
function fillLog(dir: string, count: number): void {
  execFileSync('sh', ['-c', `${shellCommand('source', `demo --count ${count}`)} | ${shellCommand('sink', 'log --path events.log --fsync never')}`], { cwd: dir });
}

interface Answer {
  count: number;
  copy: boolean;
  /** How many rows of the new column are null while it shows: none may be, built complete. */
  nullCopies: number;
}

/** Reads the view every 50 ms on a connection of its own until `stop` says so. */
async function reader(schema: string, stop: () => boolean): Promise<Answer[]> {
  const answers: Answer[] = [];
  const c = new pg.Client({ connectionString: URL_ });
  await c.connect();
  try {
    while (!stop()) {
      const copy = (await c.query("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'ice_creams' AND column_name = 'pcopy'", [schema])).rowCount === 1;
      const count = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".ice_creams`)).rows[0]?.n);
      const nullCopies = copy ? Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".ice_creams WHERE pcopy IS NULL AND price IS NOT NULL`)).rows[0]?.n) : 0;
      answers.push({ count, copy, nullCopies });
      await sleep(50);
    }
  } finally {
    await c.end();
  }
  return answers;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe.skipIf(!up)('changing a PostgreSQL view', () => {
  it('under cqp run: readers see the old version, then the new one complete, never an empty or half-built one', async () => {
    const dir = tmpDir();
    const schema = uniqueName('cqp_vc');
    schemas.push(schema);
    fillLog(dir, 100_000);
    writeFileSync(join(dir, 'views.yaml'), viewsFile());
    writeFileSync(
      join(dir, 'p.yaml'),
      `source: { type: demo, count: 0, rate: 300 }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: postgres, url: '${URL_}', schema: ${schema}, views: views.yaml }
`,
    );
    const p = runPipeline(join(dir, 'p.yaml'), { metrics: true });
    await eventually(async () => (await position(schema, 'ice_creams')) >= 100_000, {
      timeoutMs: 90_000,
      what: () => `the views to catch up with the log; stderr:\n${p.stderr()}`,
    });
    const at = await position(schema, 'ice_creams');
    const count = Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".ice_creams`)).rows[0]?.n);
    let done = false;
    const answers = reader(schema, () => done);
    const activities: string[] = [];
    const statuses = (async () => {
      while (!done) {
        const views = (await p.status()).stages.find((s) => s.name === 'views') as { activity?: string | null } | undefined;
        if (views?.activity) activities.push(views.activity);
        await sleep(100);
      }
    })();
    writeFileSync(join(dir, 'views.yaml.tmp'), WITH_COPY);
    renameSync(join(dir, 'views.yaml.tmp'), join(dir, 'views.yaml'));
    await p.waitFor(/\[views\] rebuilding ice_creams \(definition changed\) beside the live one/, 30_000);
    await p.waitFor(/\[views\] swapped in the new version of ice_creams at event \d+/, 90_000);
    await sleep(300);
    done = true;
    const seen = await answers;
    await statuses;
    p.child.kill('SIGTERM');
    expect(await p.exitWithin(30_000), p.stderr()).toBe(0);

    const { rows, deletesAfter } = await foldLog(join(dir, 'events.log'), true);
    expect(seen.length).toBeGreaterThan(5);
    expect(seen.some((a) => !a.copy)).toBe(true);
    expect(seen.some((a) => a.copy)).toBe(true);
    for (const a of seen) {
      // Never below what was there minus the deletes since; the new column only ever complete.
      expect(a.count).toBeGreaterThanOrEqual(count - deletesAfter(at));
      expect(a.nullCopies).toBe(0);
    }
    const first = seen.findIndex((a) => a.copy);
    expect(seen.slice(first).every((a) => a.copy)).toBe(true);
    expect(await tableRows(schema, true)).toEqual(rows);
    expect(activities.some((a) => /^rebuilding ice_creams: \d+% of \d+ events/.test(a)), activities.join('\n')).toBe(true);
  }, 180_000);

  it('kill -9 during the build and the swap: the build goes on from where it got to, and the view ends right', async () => {
    const dir = tmpDir();
    const schema = uniqueName('cqp_vk');
    schemas.push(schema);
    fillLog(dir, 80_000);
    const views = join(dir, 'views.yaml');
    writeFileSync(views, viewsFile());
    const sink = (): ChildProcess => {
      const c = spawn(process.execPath, [BIN.sink, 'postgres', '--url', URL_, '--schema', schema, '--views', views, '--read-log', join(dir, 'events.log'), '--follow'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.push(c);
      return c;
    };
    const kill = async (c: ChildProcess): Promise<void> => {
      const exited = new Promise((resolve) => c.once('close', resolve));
      c.kill('SIGKILL');
      await exited;
    };
    const first = sink();
    await eventually(async () => (await position(schema, 'ice_creams')) === 80_000, { timeoutMs: 90_000, what: 'the view to catch up with the log' });
    await kill(first);
    writeFileSync(views, WITH_COPY);
    const positions: number[] = [];
    let swapped = false;
    // Kills at random moments (a fixed seed: the same moments on every run) until the swap has happened.
    let seed = 7;
    const random = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let round = 0; round < 40 && !swapped; round++) {
      const c = sink();
      let err = '';
      c.stderr?.on('data', (b: Buffer) => (err += b.toString()));
      await eventually(async () => err.includes('rebuilding ice_creams') || (await colNames(schema)).includes('pcopy'), { what: () => `the sink to start; stderr:\n${err}` });
      await sleep(100 + random() * 600);
      await kill(c);
      positions.push(await position(schema, 'cqp_next_ice_creams'));
      swapped = (await colNames(schema)).includes('pcopy');
      // Whatever the moment of the kill, the view is one version or the other, whole.
      expect(await position(schema, 'ice_creams')).toBe(80_000);
    }
    expect(swapped).toBe(true);
    const building = positions.filter((n) => n > 0);
    expect(building.length).toBeGreaterThan(1);
    for (let i = 1; i < building.length; i++) expect(building[i]).toBeGreaterThanOrEqual(building[i - 1] as number);
    const { rows } = await foldLog(join(dir, 'events.log'), true);
    expect(await tableRows(schema, true)).toEqual(rows);
  }, 180_000);

  it('a handler view: kill -9 during its build beside and its swap, and it ends as the new module folds the log', async () => {
    const dir = tmpDir();
    const schema = uniqueName('cqp_vh');
    schemas.push(schema, `${schema}_cqp_next`);
    fillLog(dir, 5000);
    const views = join(dir, 'views.yaml');
    writeFileSync(views, 'views:\n  - table: types\n    handler: ./types.mjs\n');
    const module = (per: number, extra: string): string => `export default {
  async init(sql) { await sql.run('CREATE TABLE types (type text PRIMARY KEY, n bigint NOT NULL${extra})'); },
  async handle(event, sql) {
    await sql.run('INSERT INTO types (type, n) VALUES ($1, ${per}) ON CONFLICT (type) DO UPDATE SET n = types.n + ${per}', event.header.eventName[0]);
  },
};
`;
    writeFileSync(join(dir, 'types.mjs'), module(1, ''));
    const sink = (): ChildProcess => {
      const c = spawn(process.execPath, [BIN.sink, 'postgres', '--url', URL_, '--schema', schema, '--views', views, '--read-log', join(dir, 'events.log'), '--follow'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      children.push(c);
      return c;
    };
    const kill = async (c: ChildProcess): Promise<void> => {
      const exited = new Promise((resolve) => c.once('close', resolve));
      c.kill('SIGKILL');
      await exited;
    };
    const first = sink();
    await eventually(async () => (await position(schema, 'types')) === 5000, { timeoutMs: 90_000, what: 'the view to catch up with the log' });
    await kill(first);
    writeFileSync(join(dir, 'types.mjs'), module(10, ', extra text'));
    const hasExtra = async (): Promise<boolean> =>
      (await admin.query("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'types' AND column_name = 'extra'", [schema])).rowCount === 1;
    let swapped = false;
    let seed = 11;
    const random = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let round = 0; round < 40 && !swapped; round++) {
      const c = sink();
      let err = '';
      c.stderr?.on('data', (b: Buffer) => (err += b.toString()));
      await eventually(async () => err.includes('rebuilding types') || (await hasExtra()), { what: () => `the sink to start; stderr:\n${err}` });
      // A handler's build is one round trip per event: a longer run between kills than for a columns view.
      await sleep(300 + random() * 1200);
      await kill(c);
      swapped = await hasExtra();
      expect(await position(schema, 'types')).toBe(5000);
    }
    expect(swapped).toBe(true);
    const counts = new Map<string, number>();
    const l = await openCommandLog(join(dir, 'events.log'));
    try {
      for await (const batch of l.read({})) {
        for (const r of batch) {
          const type = (JSON.parse(r.bytes.toString('utf8')) as { header: { eventName: string[] } }).header.eventName[0] as string;
          counts.set(type, (counts.get(type) ?? 0) + 10);
        }
      }
    } finally {
      await l.close();
    }
    const got = (await admin.query<{ type: string; n: string }>(`SELECT type, n::text AS n FROM "${schema}".types`)).rows;
    expect(new Map(got.map((r) => [r.type, Number(r.n)]))).toEqual(counts);
  }, 180_000);
});
