import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, test } from 'vitest';
import { BIN, collect, parseLines, cqpAsync } from '../helpers/cli.js';
import type { CliResult } from '../helpers/cli.js';
import { seededRandom } from '../../src/core/random.js';

const EXAMPLES = join(import.meta.dirname, '../../pipelines/views');
const dir = mkdtempSync(join(tmpdir(), 'cqp-views-e2e-'));
const log = join(dir, 'e.log');
const views = join(dir, 'views.yaml');
const EVENTS = 20_000;

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `cqp-source ARGS | cqp-sink ARGS`; `kill` (ms) sends SIGKILL to the sink after that long. */
async function pipe(sourceArgs: string[], sinkArgs: string[], kill?: number): Promise<{ source: CliResult; sink: CliResult }> {
  const source = spawn(process.execPath, [BIN.source, ...sourceArgs], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  // The sink reads the source's pipe itself, so when it dies the source sees a closed pipe, as in a shell.
  const sink = spawn(process.execPath, [BIN.sink, ...sinkArgs], { cwd: dir, stdio: [source.stdout, 'pipe', 'pipe'] });
  source.stdout.destroy();
  let timer: NodeJS.Timeout | undefined;
  if (kill !== undefined) timer = setTimeout(() => sink.kill('SIGKILL'), kill);
  const done = await Promise.all([collect(source), collect(sink)]);
  clearTimeout(timer);
  return { source: done[0], sink: done[1] };
}

/** Every row of every view, by table, in key order. */
function snapshot(db: string): Record<string, unknown[]> {
  const d = new Database(db, { readonly: true });
  try {
    return {
      ice_creams: d.prepare('SELECT * FROM ice_creams ORDER BY id').all(),
      sales: d.prepare('SELECT * FROM sales ORDER BY product_id').all(),
      flavor_counts: d.prepare('SELECT * FROM flavor_counts ORDER BY flavor').all(),
    };
  } finally {
    d.close();
  }
}

describe('cqp-source log | cqp-sink sqlite --views', () => {
  let clean: Record<string, unknown[]>;

  test('a clean run builds the example views from the log', async () => {
    copyFileSync(join(EXAMPLES, 'ice-creams.yaml'), views);
    copyFileSync(join(EXAMPLES, 'flavor-counts.mjs'), join(dir, 'flavor-counts.mjs'));
    const made = await pipe(['demo', '--count', String(EVENTS), '--entities', '500'], ['log', '--path', log]);
    expect(made.sink.stderr).toBe('');
    expect(made.sink.status).toBe(0);

    const run = await pipe(['log', '--path', log], ['sqlite', '--db', 'clean.db', '--views', views]);
    expect(run.sink.stderr).toBe('');
    expect(run.sink.status).toBe(0);
    clean = snapshot(join(dir, 'clean.db'));
    expect(clean['ice_creams']?.length).toBeGreaterThan(100);
    expect(clean['sales']?.length).toBeGreaterThan(100);
    expect(clean['flavor_counts']?.length).toBe(10);
  });

  test('kill -9 of the sink at random moments, then a re-run, gives the views of the clean run', async () => {
    const next = seededRandom(Number(process.env['CQP_TEST_SEED'] ?? 20240530));
    let killed = 0;
    for (let round = 0; round < 5; round++) {
      const at = 150 + Math.floor(next() * 900);
      const run = await pipe(['log', '--path', log], ['sqlite', '--db', 'v.db', '--views', views], at);
      if (run.sink.signal === 'SIGKILL') killed++;
      else expect(run.sink.status).toBe(0);
    }
    const last = await pipe(['log', '--path', log], ['sqlite', '--db', 'v.db', '--views', views]);
    expect(last.sink.stderr).toBe('');
    expect(last.sink.status).toBe(0);
    expect(killed).toBeGreaterThan(0);
    expect(snapshot(join(dir, 'v.db'))).toEqual(clean);
  });

  test('a view added later is built from the log without touching the others', async () => {
    const extra = join(dir, 'more.yaml');
    writeFileSync(
      extra,
      `views:
  - table: ice_creams
    key: header.rel.id
    type: header.eventName.0
    columns:
      product_id: payload.productId
      name: payload.name
      price: { path: payload.price, type: real }
      flavors: { path: payload.flavors, type: json }
      dairy_free: { path: payload.dairyFree, type: boolean }
      updated_at: header.createdTimestamp
      sold: { type: integer }
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
      sale.ice_cream: { increment: { sold: payload.qty } }
  - table: deletes
    columns: { at: header.createdTimestamp }
    on: { delete.ice_cream: upsert }
`,
    );
    // ice_creams has the same definition as in the example file: a marker row shows it is not rebuilt.
    const w = new Database(join(dir, 'v.db'));
    w.prepare("INSERT INTO ice_creams (id, name) VALUES ('marker', 'kept')").run();
    w.close();
    const run = await pipe(['log', '--path', log], ['sqlite', '--db', 'v.db', '--views', extra]);
    expect(run.sink.status).toBe(0);
    const d = new Database(join(dir, 'v.db'), { readonly: true });
    const deletes = d.prepare('SELECT count(*) AS n FROM deletes').get() as { n: number };
    const marker = d.prepare("SELECT name FROM ice_creams WHERE id = 'marker'").get();
    d.close();
    expect(deletes.n).toBeGreaterThan(0);
    expect(marker).toEqual({ name: 'kept' });
    const w2 = new Database(join(dir, 'v.db'));
    w2.prepare("DELETE FROM ice_creams WHERE id = 'marker'").run();
    w2.close();
    expect(snapshot(join(dir, 'v.db'))).toEqual(clean);
  });

  test('without --views the events table holds every event once', async () => {
    await pipe(['log', '--path', log], ['sqlite', '--db', 'events.db'], 400);
    const run = await pipe(['log', '--path', log], ['sqlite', '--db', 'events.db']);
    expect(run.sink.status).toBe(0);
    const d = new Database(join(dir, 'events.db'), { readonly: true });
    const stats = d.prepare('SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events').get();
    d.close();
    expect(stats).toEqual({ n: EVENTS, ids: EVENTS });
  });

  test('a bad views file exits 2 naming the file, line and field', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'views:\n  - table: t\n    columns: { a: payload.a }\n    on: { create.ice_cream: upsrt }\n');
    const result = await cqpAsync(['sqlite', '--db', 'bad.db', '--views', bad], { bin: 'sink', cwd: dir, input: '' });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`${bad}:4: field views[0].on["create.ice_cream"]: unknown action "upsrt" — did you mean "upsert"?`);
  });
});

describe('cqp query', () => {
  test('prints a table, or NDJSON with --json', async () => {
    const table = await cqpAsync(['query', join(dir, 'clean.db'), 'SELECT flavor, ice_creams FROM flavor_counts ORDER BY flavor LIMIT 2']);
    expect(table.status).toBe(0);
    const lines = table.stdout.split('\n');
    expect(lines[0]).toMatch(/^flavor\s+ice_creams$/);
    expect(lines[3]).toBeDefined();
    expect(lines[4]).toBe('(2 rows)');
    const json = await cqpAsync(['query', join(dir, 'clean.db'), 'SELECT flavor, ice_creams FROM flavor_counts ORDER BY flavor', '--json']);
    expect(json.status).toBe(0);
    expect(parseLines(json.stdout)).toEqual(cleanFlavors());
  });

  test('bad SQL is a clear error', async () => {
    const result = await cqpAsync(['query', join(dir, 'clean.db'), 'SELECT * FROM nope']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('no such table: nope');
  });
});

function cleanFlavors(): unknown[] {
  const d = new Database(join(dir, 'clean.db'), { readonly: true });
  try {
    return d.prepare('SELECT flavor, ice_creams FROM flavor_counts ORDER BY flavor').all();
  } finally {
    d.close();
  }
}
