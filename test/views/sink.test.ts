import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { stampLine } from '../../src/core/position.js';
import { runSink } from '../../src/core/runtime.js';
import type { ErrorMode } from '../../src/core/policy.js';
import sqlite from '../../src/sinks/sqlite.js';
import { demoEvents } from '../../src/sources/demo.js';

const VIEWS = `views:
  - table: ice
    columns:
      name: payload.name
      sold: { type: integer }
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
      sale.ice_cream: { increment: { sold: payload.qty } }
`;

async function sink(dir: string, lines: string[], options: Record<string, unknown>, onError: ErrorMode = 'fail'): Promise<string[]> {
  const warnings: string[] = [];
  await runSink(sqlite, sqlite.options.parse(options), { onError, maxLineBytes: 1 << 20 }, {
    input: Readable.from([lines.map((l) => `${l}\n`).join('')]),
    output: new PassThrough(),
    warn: (m) => warnings.push(m),
    signal: new AbortController().signal,
    cwd: dir,
  });
  return warnings;
}

function rows(file: string, sql: string): unknown[] {
  const d = new Database(file, { readonly: true });
  try {
    return d.prepare(sql).all();
  } finally {
    d.close();
  }
}

function demoLines(count: number, seed = 3): string[] {
  const next = demoEvents(seed, 50);
  return Array.from({ length: count }, (_, i) => stampLine(JSON.stringify(next()), { source: `demo:${seed}`, n: String(i) }));
}

describe('cqp-sink sqlite through the stage runtime', () => {
  test('views follow stamped events, and running the same input again changes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    const lines = demoLines(2000);
    await sink(dir, lines.slice(0, 1200), { db: 'v.db', views: 'views.yaml' });
    await sink(dir, lines, { db: 'v.db', views: 'views.yaml' });
    const once = rows(join(dir, 'v.db'), 'SELECT * FROM ice ORDER BY id');

    const clean = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    writeFileSync(join(clean, 'views.yaml'), VIEWS);
    await sink(clean, lines, { db: 'v.db', views: 'views.yaml' });
    expect(once).toEqual(rows(join(clean, 'v.db'), 'SELECT * FROM ice ORDER BY id'));
    expect(rows(join(dir, 'v.db'), 'SELECT view, source, n FROM cqp_positions')).toEqual([{ view: 'ice', source: 'demo:3', n: '1999' }]);
  });

  test('without --views it keeps the events table, with the stamp taken off the body', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    await sink(dir, demoLines(10), { db: 'e.db' });
    await sink(dir, demoLines(10), { db: 'e.db' });
    const stored = rows(join(dir, 'e.db'), "SELECT count(*) AS n, sum(body LIKE '%@cqp%') AS stamped FROM events");
    expect(stored).toEqual([{ n: 10, stamped: 0 }]);
  });

  test('an event a view cannot apply follows --on-error: fail names the input line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    const lines = ['{"header":{"eventName":["create.ice_cream"],"rel":{"id":"a"}},"payload":{"name":"Mint"}}', '{"header":{"eventName":["create.ice_cream"]},"payload":{"name":"NoKey"}}'];
    await expect(sink(dir, lines, { db: 'v.db', views: 'views.yaml' })).rejects.toThrow(/stdin:2: view ice: no key header\.rel\.id \/ id in a create\.ice_cream event/);
    expect(rows(join(dir, 'v.db'), 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 0 }]);
  });

  test('under --on-error skip the bad event is reported and the rest is applied', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    const lines = ['{"header":{"eventName":["create.ice_cream"]},"payload":{"name":"NoKey"}}', '{"header":{"eventName":["create.ice_cream"],"rel":{"id":"a"}},"payload":{"name":"Mint"}}'];
    const warnings = await sink(dir, lines, { db: 'v.db', views: 'views.yaml' }, 'skip');
    expect(warnings).toEqual(['cqp: skipped stdin:1: view ice: no key header.rel.id / id in a create.ice_cream event']);
    expect(rows(join(dir, 'v.db'), 'SELECT id, name FROM ice')).toEqual([{ id: 'a', name: 'Mint' }]);
  });

  test('a bad views file stops the sink before it touches the database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-'));
    writeFileSync(join(dir, 'views.yaml'), VIEWS.replace('delete.ice_cream: delete', 'delete.ice_cream: delet'));
    await expect(sink(dir, [], { db: 'v.db', views: 'views.yaml' })).rejects.toThrow(/views\.yaml:9: field views\[0\]\.on\["delete\.ice_cream"\]: unknown action "delet" — did you mean "delete"\?/);
    expect(() => rows(join(dir, 'v.db'), 'SELECT 1')).toThrow();
  });

  test('every example of its options parses', () => {
    for (const example of sqlite.examples) expect(() => sqlite.options.parse(example)).not.toThrow();
  });
});
