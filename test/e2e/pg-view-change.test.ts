/**
 * Changing a PostgreSQL view while it is read: the new version is built beside the live one in the same
 * schema and renamed into its place, so a reader never sees it empty or half built, and a kill -9 during
 * the build or the swap loses nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openCommandLog } from '../../src/log/command-log.js';
import { BIN } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { URL_ } from '../helpers/pg-views.js';
import { runPipeline, tmpDir } from '../helpers/pipeline.js';
import { service, uniqueName } from '../helpers/services.js';
import { expectOldThenNew, fillLog, foldLog, killNow, seededRandom, viewsFile, WITH_COPY, type Answer, type Row } from '../helpers/view-change.js';

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
    // Never below what was there minus the deletes since; the new column only ever complete, and once shown it stays.
    expectOldThenNew(seen, count - deletesAfter(at));
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
    const first = sink();
    await eventually(async () => (await position(schema, 'ice_creams')) === 80_000, { timeoutMs: 90_000, what: 'the view to catch up with the log' });
    await killNow(first);
    writeFileSync(views, WITH_COPY);
    const positions: number[] = [];
    let swapped = false;
    // Kills at random moments (a fixed seed: the same moments on every run) until the swap has happened.
    const random = seededRandom(7);
    for (let round = 0; round < 40 && !swapped; round++) {
      const c = sink();
      let err = '';
      c.stderr?.on('data', (b: Buffer) => (err += b.toString()));
      await eventually(async () => err.includes('rebuilding ice_creams') || (await colNames(schema)).includes('pcopy'), { what: () => `the sink to start; stderr:\n${err}` });
      await sleep(100 + random() * 600);
      await killNow(c);
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
    const first = sink();
    await eventually(async () => (await position(schema, 'types')) === 5000, { timeoutMs: 90_000, what: 'the view to catch up with the log' });
    await killNow(first);
    writeFileSync(join(dir, 'types.mjs'), module(10, ', extra text'));
    const hasExtra = async (): Promise<boolean> =>
      (await admin.query("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'types' AND column_name = 'extra'", [schema])).rowCount === 1;
    let swapped = false;
    const random = seededRandom(11);
    for (let round = 0; round < 40 && !swapped; round++) {
      const c = sink();
      let err = '';
      c.stderr?.on('data', (b: Buffer) => (err += b.toString()));
      await eventually(async () => err.includes('rebuilding types') || (await hasExtra()), { what: () => `the sink to start; stderr:\n${err}` });
      // A handler's build is one round trip per event: a longer run between kills than for a columns view.
      await sleep(300 + random() * 1200);
      await killNow(c);
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
