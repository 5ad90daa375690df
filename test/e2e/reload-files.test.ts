import { linkSync, mkdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, tmpDir, type RunningPipeline, type StageStatus } from '../helpers/pipeline.js';

const PIPELINE = `source: { type: demo, count: 0, rate: 400 }
stages:
  - { name: check, filter: validate, with: { schema: schema.json } }
  - { name: up, filter: module, with: { file: up.mjs } }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: sqlite, db: views.db, views: views/views.yaml }
`;

/** The views file, in its own folder: its handler module is named relative to it. */
function viewsFile(column = 'name'): string {
  return `views:
  - table: products
    key: header.rel.id
    columns:
      ${column}: payload.name
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
  - table: tally
    handler: ./tally.mjs
`;
}

/** A handler view counting events by name, each count under `<version>:<event name>`. */
function tally(version: string): string {
  return `export default {
  init(sql) { sql.run('CREATE TABLE tally (kind TEXT PRIMARY KEY, n INTEGER NOT NULL)'); },
  handle(event, sql) {
    sql.run("INSERT INTO tally VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET n = n + 1", '${version}:' + event.header.eventName[0]);
  },
};
`;
}

interface Running {
  dir: string;
  p: RunningPipeline;
  /** `/status` once the views hold events. */
  before: StageStatus[];
}

/** Starts the pipeline in a new folder (`prepare` is called before) and waits until events have reached the views. */
async function start(prepare?: (dir: string) => void): Promise<Running> {
  const dir = tmpDir();
  mkdirSync(join(dir, 'views'));
  writeFileSync(join(dir, 'schema.json'), '{ "type": "object", "required": ["header"] }\n');
  writeFileSync(join(dir, 'up.mjs'), 'export default (e) => e;\n');
  writeFileSync(join(dir, 'views/views.yaml'), viewsFile());
  writeFileSync(join(dir, 'views/tally.mjs'), tally('v1'));
  writeFileSync(join(dir, 'p.yaml'), PIPELINE);
  prepare?.(dir);
  const p = runPipeline(join(dir, 'p.yaml'), { metrics: true });
  const before = await eventually(
    async () => {
      const stages = await p.stages();
      return (stages.find((s) => s.name === 'views')?.in ?? 0) > 0 ? stages : undefined;
    },
    { timeoutMs: 30_000, what: () => `events to reach the views; stderr:\n${p.stderr()}` },
  );
  return { dir, p, before };
}

/** The components whose process is not the one they had before. */
async function replaced(p: RunningPipeline, before: StageStatus[]): Promise<string[]> {
  const after = await p.stages();
  return after.filter((s) => before.find((b) => b.name === s.name)?.pid !== s.pid).map((s) => s.name);
}

function query<T>(db: string, sql: string): T[] {
  const d = new Database(db, { readonly: true });
  try {
    return d.prepare(sql).all() as T[];
  } finally {
    d.close();
  }
}

function columns(db: string, table: string): string[] {
  return query<{ name: string }>(db, `PRAGMA table_info(${table})`).map((c) => c.name);
}

/** Saves as editors do: a new file renamed over the old one. */
function save(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

async function stop(p: RunningPipeline): Promise<void> {
  p.child.kill('SIGTERM');
  expect(await p.exitWithin(30_000), p.stderr()).toBe(0);
}

describe('cqp run: a reload sees the files the pipeline names', () => {
  it('an edited views file replaces only the views sink, and the new view is built', async () => {
    const { dir, p, before } = await start();
    save(join(dir, 'views/views.yaml'), viewsFile('title'));
    await p.waitFor(/reload #1: ~views \(changed: views\/views\.yaml\)/, 20_000);
    expect(await replaced(p, before)).toEqual(['views']);
    const db = join(dir, 'views.db');
    await eventually(() => columns(db, 'products').includes('title') && query(db, 'SELECT 1 FROM products WHERE title IS NOT NULL').length > 0, {
      what: 'the products view rebuilt with its new column',
    });
    await stop(p);
  }, 60_000);

  it('an edited handler module, named inside the views file, replaces the views sink', async () => {
    const { dir, p, before } = await start();
    save(join(dir, 'views/tally.mjs'), tally('v2'));
    await p.waitFor(/reload #1: ~views \(changed: views\/tally\.mjs\)/, 20_000);
    expect(await replaced(p, before)).toEqual(['views']);
    const db = join(dir, 'views.db');
    // The rebuilt view holds only the new module's counts.
    await eventually(() => {
      const kinds = query<{ kind: string }>(db, 'SELECT kind FROM tally').map((r) => r.kind);
      return kinds.length > 0 && kinds.every((k) => k.startsWith('v2:'));
    }, { what: 'the tally view rebuilt by the new handler' });
    await stop(p);
  }, 60_000);

  it('an edited schema or module replaces only the stage that reads it', async () => {
    const { dir, p, before } = await start();
    save(join(dir, 'up.mjs'), 'export default (e) => ({ ...e, up: 2 });\n');
    await p.waitFor(/reload #1: ~up \(changed: up\.mjs\)/, 20_000);
    expect(await replaced(p, before)).toEqual(['up']);
    const between = await p.stages();
    save(join(dir, 'schema.json'), '{ "type": "object", "required": ["header", "payload"] }\n');
    await p.waitFor(/reload #2: ~check \(changed: schema\.json\)/, 20_000);
    expect(await replaced(p, between)).toEqual(['check']);
    await stop(p);
  }, 60_000);

  it('a views file that does not validate is refused, naming its line and field; the running pipeline goes on', async () => {
    const { dir, p, before } = await start();
    save(join(dir, 'views/views.yaml'), viewsFile().replace('update.ice_cream: upsert', 'update.ice_cream: upsret'));
    const [line] = await p.waitFor(/reload #1 refused: views: \S+views\/views\.yaml:8: field views\[0\]\.on\["update\.ice_cream"\]: .*/, 20_000);
    expect(line).toContain('upsret');
    expect(await replaced(p, before)).toEqual([]);
    const seen = before.find((s) => s.name === 'views')?.in ?? 0;
    await eventually(async () => ((await p.stages()).find((s) => s.name === 'views')?.in ?? 0) > seen + 100, { what: 'the old views sink to go on' });
    expect((await p.status()).reloads).toEqual({ ok: 0, failed: 1 });
    // Mended: the refused content is forgotten, the mended one is a change like any other.
    save(join(dir, 'views/views.yaml'), viewsFile('title'));
    await p.waitFor(/reload #2: ~views/, 20_000);
    expect(await replaced(p, before)).toEqual(['views']);
    await stop(p);
  }, 60_000);

  it('SIGHUP reads the named files again: a change no watcher sees is picked up', async () => {
    // Edit the views file through a hard link in another folder, in place, with the same size and the
    // same modification time: neither the folder watch nor the stat poll sees it.
    const twin = join(tmpDir(), 'views.yaml');
    const when = new Date('2026-01-01T00:00:00Z');
    const { p, before, dir: run } = await start((dir) => {
      linkSync(join(dir, 'views/views.yaml'), twin);
      utimesSync(twin, when, when);
    });
    const views = join(run, 'views/views.yaml');
    const edited = viewsFile('nome');
    expect(edited.length).toBe(readFileSync(views, 'utf8').length);
    writeFileSync(twin, edited, { flag: 'r+' });
    utimesSync(twin, when, when);
    expect(readFileSync(views, 'utf8')).toBe(edited);
    // Longer than the poll's interval and the debounce: nothing has noticed the change.
    await sleep(1200);
    expect(p.stderr()).not.toMatch(/reload #/);
    p.child.kill('SIGHUP');
    await p.waitFor(/reload #1: ~views \(changed: views\/views\.yaml\)/, 20_000);
    expect(await replaced(p, before)).toEqual(['views']);
    await eventually(() => columns(join(run, 'views.db'), 'products').includes('nome'), { what: 'the products view rebuilt with its new column' });
    await stop(p);
  }, 60_000);

  it('a save that leaves the same bytes replaces nothing', async () => {
    const { dir, p, before } = await start();
    const views = join(dir, 'views/views.yaml');
    save(views, readFileSync(views, 'utf8'));
    save(join(dir, 'views/tally.mjs'), tally('v1'));
    p.child.kill('SIGHUP');
    // Longer than the poll's interval and the debounce: every watcher has fired by now.
    await sleep(1200);
    expect(p.stderr()).not.toMatch(/reload #/);
    expect(await replaced(p, before)).toEqual([]);
    expect((await p.status()).reloads).toEqual({ ok: 0, failed: 0 });
    // The same file with other bytes is a change: the watch was on.
    save(views, viewsFile('title'));
    await p.waitFor(/reload #1: ~views/, 20_000);
    await stop(p);
  }, 60_000);
});
