import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, test } from 'vitest';
import { CqpError } from '../../src/core/errors.js';
import { runQuery } from '../../src/views/query.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-query-'));
const db = join(dir, 'v.db');

beforeAll(() => {
  const d = new Database(db);
  d.pragma('journal_mode = WAL');
  d.exec(`CREATE TABLE ice (id TEXT PRIMARY KEY, name TEXT, price REAL, sold INTEGER, note TEXT);
    INSERT INTO ice VALUES ('a', 'Mint', 4.5, 12, NULL);
    INSERT INTO ice VALUES ('b', 'Chocolate Fudge Brownie', 10.25, 3, 'line one
line two');
    INSERT INTO ice VALUES ('c', '${'x'.repeat(100)}', NULL, 9007199254740993, NULL);`);
  d.close();
});

async function query(sql: string, json = false, maxCellWidth?: number): Promise<string> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (chunk: Buffer) => (text += chunk.toString()));
  await runQuery(db, sql, { json, maxCellWidth }, out);
  out.end();
  return text;
}

describe('cqp query', () => {
  test('prints an aligned table: numbers right-aligned, NULL empty, control characters shown', async () => {
    const text = await query("SELECT id, name, price, sold, note FROM ice WHERE id IN ('a', 'b') ORDER BY id");
    expect(text).toBe(
      [
        'id  name                     price  sold  note',
        '--  -----------------------  -----  ----  ------------------',
        'a   Mint                       4.5    12',
        'b   Chocolate Fudge Brownie  10.25     3  line one\\nline two',
        '(2 rows)',
        '',
      ].join('\n'),
    );
  });

  test('cuts long cells and keeps large integers exact', async () => {
    const text = await query("SELECT name, sold FROM ice WHERE id = 'c'", false, 20);
    const lines = text.split('\n');
    expect(lines[2]).toBe(`${'x'.repeat(19)}…  9007199254740993`);
    expect(lines[3]).toBe('(1 row)');
  });

  test('an empty result still shows the headers', async () => {
    expect(await query("SELECT id, name FROM ice WHERE id = 'none'")).toBe('id  name\n--  ----\n(0 rows)\n');
  });

  test('prints NDJSON with --json', async () => {
    const text = await query('SELECT id, price, sold, note FROM ice ORDER BY id', true);
    const lines = text.trimEnd().split('\n');
    expect(lines.slice(0, 2).map((l) => JSON.parse(l) as unknown)).toEqual([
      { id: 'a', price: 4.5, sold: 12, note: null },
      { id: 'b', price: 10.25, sold: 3, note: 'line one\nline two' },
    ]);
    // An integer beyond 2^53 is printed as a number with all its digits.
    expect(lines[2]).toBe('{"id":"c","price":null,"sold":9007199254740993,"note":null}');
  });

  test('JSON functions work on stored JSON text', async () => {
    expect(await query("SELECT json_extract('{\"a\":[1,2]}', '$.a[1]') AS second", true)).toBe('{"second":2}\n');
  });

  const failures: Array<[string, string, string, RegExp]> = [
    ['bad SQL, with SQLite’s message', db, 'SELEC * FROM ice', /cqp query .*v\.db: SQLite rejects the query: near "SELEC": syntax error/],
    ['an unknown table', db, 'SELECT * FROM nope', /no such table: nope/],
    ['a statement that writes', db, "DELETE FROM ice WHERE id = 'a'", /only queries that return rows/],
    ['a missing database file', join(dir, 'missing.db'), 'SELECT 1', /no database at .*missing\.db/],
  ];
  for (const [name, file, sql, message] of failures) {
    test(`refuses ${name} with a clear error`, async () => {
      const error = await runQuery(file, sql, {}, new PassThrough()).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CqpError);
      expect((error as CqpError).message).toMatch(message);
    });
  }

  test('a file that is not SQLite is reported as such', async () => {
    const file = join(dir, 'not.db');
    writeFileSync(file, 'hello, this is not a database at all'.repeat(20));
    await expect(runQuery(file, 'SELECT 1 FROM sqlite_master', {}, new PassThrough())).rejects.toThrow(/not a database/);
  });

  test('the rows written stay after the query: it opened the file read-only', async () => {
    await query("SELECT * FROM ice WHERE id = 'a'");
    const d = new Database(db, { readonly: true });
    expect(d.prepare('SELECT count(*) AS n FROM ice').get()).toEqual({ n: 3 });
    d.close();
  });
});
