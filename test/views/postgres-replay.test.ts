/**
 * `cqp replay` into PostgreSQL views, blue/green: built into a new schema and swapped in at the end in
 * one transaction; `--until` by seq and by append time; a kill -9 mid-replay leaves the old views.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { collect, cqp, cqpAsync, parseLines, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { noProcessesLeftIn } from '../helpers/processes.js';
import { service, uniqueName } from '../helpers/services.js';
import { client, fold, pgViews, positionOf, URL_, VIEWS, type Row } from '../helpers/pg-views.js';

const up = await service('postgres');
const EVENTS = 20_000;

interface Logged {
  seq: number;
  time: string;
  event: Row;
}

async function schemasLike(prefix: string): Promise<string[]> {
  const c = await client();
  try {
    const r = await c.query<{ n: string }>("SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1", [`${prefix}%`]);
    return r.rows.map((x) => x.n);
  } finally {
    await c.end();
  }
}

describe.skipIf(!up)('replay into PostgreSQL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-pg-replay-'));
  const log = join(dir, 'e.log');
  const schemas: string[] = [];
  let logged: Logged[] = [];

  /** A pipeline (stdin source) whose one sink keeps the views in a schema of its own. */
  const pipeline = (): { file: string; schema: string } => {
    const schema = uniqueName('cqp_replay');
    schemas.push(schema);
    const file = join(dir, `${schema}.yaml`);
    writeFileSync(file, `name: v\nsource: { type: stdin }\nsinks:\n  - { name: views, type: postgres, url: "${URL_}", schema: ${schema}, views: views.yaml }\n`);
    return { file, schema };
  };

  beforeAll(() => {
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    const demo = cqp(['source', 'demo', '--count', String(EVENTS), '--seed', '3', '--entities', '300']);
    expect(cqp(['sink', 'log', '--path', log], { input: demo.stdout }).status).toBe(0);
    logged = parseLines(cqp(['log', 'cat', log, '--meta']).stdout) as unknown as Logged[];
    expect(logged).toHaveLength(EVENTS);
  });

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    const c = await client();
    for (const s of schemas) for (const n of await schemasLike(s)) await c.query(`DROP SCHEMA IF EXISTS "${n}" CASCADE`);
    await c.end();
  });

  test('a replay into schema public is refused: the swap would take every other table of public with it', async () => {
    const table = uniqueName('cqp_keep');
    const c = await client();
    try {
      await c.query(`CREATE TABLE public."${table}" (x int)`);
      await c.query(`INSERT INTO public."${table}" VALUES (42)`);
      const file = join(dir, 'public.yaml');
      writeFileSync(file, `name: v\nsource: { type: stdin }\nsinks:\n  - { name: views, type: postgres, url: "${URL_}", schema: public, views: views.yaml }\n`);
      const r = await cqpAsync(['replay', '--log', log, '--pipeline', file], { cwd: dir });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/schema "public" usually holds other tables/);
      expect((await c.query(`SELECT x FROM public."${table}"`)).rows).toEqual([{ x: 42 }]);
    } finally {
      await c.query(`DROP TABLE IF EXISTS public."${table}"`);
      await c.end();
    }
  });

  test('--until by seq and by append time gives the views as of that point, swapped in whole; refused while a sink writes that schema', async () => {
    const p = pipeline();
    const bySeq = await cqpAsync(['replay', '--log', log, '--pipeline', p.file, '--until', '8000'], { cwd: dir });
    expect(bySeq.status, bySeq.stderr).toBe(0);
    expect(bySeq.stderr).toContain(`schema "${p.schema}" replaced`);
    expect(await pgViews(p.schema)).toEqual(fold(logged.slice(0, 8000).map((l) => l.event)));
    expect(await positionOf(p.schema)).toBe(8000);

    const at = (logged[12_345] as Logged).time;
    const byTime = await cqpAsync(['replay', '--log', log, '--pipeline', p.file, '--until', at], { cwd: dir });
    expect(byTime.status, byTime.stderr).toBe(0);
    const upTo = logged.filter((l) => Date.parse(l.time) <= Date.parse(at));
    expect(upTo.length).toBeGreaterThan(8000);
    expect(await pgViews(p.schema)).toEqual(fold(upTo.map((l) => l.event)));
    expect(await schemasLike(p.schema)).toEqual([p.schema]);

    // A sink writing the schema holds its lock: the replay is refused and the views are untouched.
    const live = spawnCli('sink', ['postgres', '--url', URL_, '--schema', p.schema, '--views', 'views.yaml', '--read-log', log, '--follow'], { cwd: dir });
    const liveDone = collect(live);
    await eventually(async () => (await positionOf(p.schema)) === EVENTS, { what: 'the live sink to catch up' });
    const refused = await cqpAsync(['replay', '--log', log, '--pipeline', p.file, '--until', '100'], { cwd: dir });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`schema "${p.schema}": cqp sink postgres .*pid ${live.pid} .* is writing it`));
    expect(await positionOf(p.schema)).toBe(EVENTS);
    live.kill('SIGTERM');
    expect((await liveDone).status).toBe(0);
  });

  test('kill -9 mid-replay leaves the old views; the next replay drops the leftover schema and completes', async () => {
    const p = pipeline();
    const first = await cqpAsync(['replay', '--log', log, '--pipeline', p.file, '--until', '1000'], { cwd: dir });
    expect(first.status, first.stderr).toBe(0);
    const before = await pgViews(p.schema);
    expect(before).toEqual(fold(logged.slice(0, 1000).map((l) => l.event)));

    const child = spawnCli('cqp', ['replay', '--log', log, '--pipeline', p.file], { cwd: dir });
    const done = collect(child);
    const temp = `${p.schema}_replay_${child.pid}`;
    await eventually(async () => (await positionOf(temp)) >= 2000, { everyMs: 20, what: 'the replay to write into its new schema' });
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    await noProcessesLeftIn(dir, { timeoutMs: 30_000, what: 'the killed replay’s sink to exit' });
    expect(await pgViews(p.schema)).toEqual(before);
    expect(await positionOf(p.schema)).toBe(1000);
    expect(await schemasLike(p.schema)).toEqual([p.schema, temp]);

    const second = await cqpAsync(['replay', '--log', log, '--pipeline', p.file, '--until', '15000'], { cwd: dir });
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toContain(`schema "${temp}", left by an interrupted replay`);
    expect(await schemasLike(p.schema)).toEqual([p.schema]);
    expect(await pgViews(p.schema)).toEqual(fold(logged.slice(0, 15_000).map((l) => l.event)));
  });
});
