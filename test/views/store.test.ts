import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import type { JsonObject } from '../../src/core/component.js';
import { parseJson } from '../../src/core/json.js';
import { parseViews } from '../../src/views/definition.js';
import { readViewsApplied, ViewStore } from '../../src/views/store.js';
import type { ViewEvent } from '../../src/views/store.js';

const open: ViewStore[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cqp-views-'));
}

async function storeFor(dir: string, yaml: string | undefined, db = 'v.db', building = false): Promise<ViewStore> {
  let views;
  if (yaml !== undefined) {
    writeFileSync(join(dir, 'views.yaml'), yaml);
    views = parseViews(yaml, join(dir, 'views.yaml'));
  }
  const store = await ViewStore.open(join(dir, db), views, building);
  open.push(store);
  return store;
}

function rows(dir: string, sql: string, db = 'v.db'): unknown[] {
  const d = new Database(join(dir, db), { readonly: true });
  try {
    return d.prepare(sql).all();
  } finally {
    d.close();
  }
}

function ev(type: string, id: string, payload: JsonObject = {}): JsonObject {
  return { header: { eventId: `events/${type}-${id}`, eventName: [type], createdTimestamp: '2022-05-30T08:49:46.745Z', rel: { id } }, payload };
}

function at(n: number, event: JsonObject, source = 'file:a'): ViewEvent {
  return { event, position: { source, n: String(n) } };
}

const ICE = `views:
  - table: ice
    columns:
      name: payload.name
      price: { path: payload.price, type: real }
      sold: { path: payload.initial, type: integer }
    on:
      create: upsert
      update: upsert
      add: insert
      delete: delete
      sale: { increment: { sold: payload.qty } }
`;

describe('actions', () => {
  test('upsert inserts, then updates only the columns whose paths the event has', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    store.applyBatch([{ event: ev('create', 'a', { name: 'Mint', price: 4.5 }) }]);
    store.applyBatch([{ event: ev('update', 'a', { price: 5 }) }]);
    expect(rows(dir, 'SELECT * FROM ice')).toEqual([{ id: 'a', name: 'Mint', price: 5, sold: 0 }]);
    store.applyBatch([{ event: ev('update', 'a', { name: null }) }]);
    expect(rows(dir, 'SELECT * FROM ice')).toEqual([{ id: 'a', name: null, price: 5, sold: 0 }]);
  });

  test('delete removes the row with that key', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    store.applyBatch([{ event: ev('create', 'a', { name: 'Mint' }) }, { event: ev('create', 'b', { name: 'Fudge' }) }, { event: ev('delete', 'a') }]);
    expect(rows(dir, 'SELECT id, name FROM ice')).toEqual([{ id: 'b', name: 'Fudge' }]);
  });

  test('increment adds to a column, starting from 0 and creating the row when missing', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    store.applyBatch([
      { event: ev('sale', 'a', { qty: 2 }) },
      { event: ev('sale', 'a', { qty: 3 }) },
      { event: ev('create', 'b', { name: 'Fudge' }) },
      { event: ev('sale', 'b', { qty: '4' }) },
    ]);
    expect(rows(dir, 'SELECT id, name, sold FROM ice ORDER BY id')).toEqual([
      { id: 'a', name: null, sold: 5 },
      { id: 'b', name: 'Fudge', sold: 4 },
    ]);
  });

  test('an increment whose sum no SQLite integer holds is a bad event; the row keeps its value', async () => {
    // SQLite's own `+` turns 2^63-1 + 1 into the REAL 9223372036854775808, silently.
    const dir = tempDir();
    const store = await storeFor(
      dir,
      `views:
  - table: totals
    key: { column: id, path: id }
    type: kind
    columns:
      n: { type: integer }
      r: { type: real }
    on:
      add: { increment: { n: q, r: x } }
`,
    );
    const event = (text: string): ViewEvent => ({ event: parseJson(text) as JsonObject });
    const bad: string[] = [];
    store.applyBatch(
      [
        event('{"kind":"add","id":"a","q":9223372036854775806,"x":0.5}'),
        event('{"kind":"add","id":"a","q":1,"x":0.25}'),
        event('{"kind":"add","id":"a","q":1,"x":1}'),
        event('{"kind":"add","id":"b","q":-9223372036854775807,"x":1}'),
        event('{"kind":"add","id":"b","q":-2,"x":1}'),
        event('{"kind":"add","id":"b","q":-1,"x":1}'),
      ],
      (index, message) => bad.push(`${index}: ${message}`),
    );
    expect(bad).toEqual([
      '2: view totals: increment of n (q): 9223372036854775807 + 1 is beyond the integers SQLite holds exactly (from -2^63 to 2^63-1)',
      '4: view totals: increment of n (q): -9223372036854775807 + -2 is beyond the integers SQLite holds exactly (from -2^63 to 2^63-1)',
    ]);
    const d = new Database(join(dir, 'v.db'), { readonly: true });
    try {
      const all = d.prepare('SELECT id, n, typeof(n) AS tn, r FROM totals ORDER BY id').safeIntegers().all();
      // The bad events changed neither column: the statement as a whole failed.
      expect(all).toEqual([
        { id: 'a', n: 9223372036854775807n, tn: 'integer', r: 0.75 },
        { id: 'b', n: -9223372036854775808n, tn: 'integer', r: 2 },
      ]);
    } finally {
      d.close();
    }
  });

  test('insert adds a row; a second insert of the same key is a bad event', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    const bad: Array<[number, string]> = [];
    store.applyBatch([{ event: ev('add', 'a', { name: 'Mint' }) }, { event: ev('add', 'a', { name: 'Again' }) }], (i, m) => bad.push([i, m]));
    expect(rows(dir, 'SELECT id, name FROM ice')).toEqual([{ id: 'a', name: 'Mint' }]);
    expect(bad).toEqual([[1, 'view ice: ice already has a row with key "a" (insert adds new rows; use upsert to update them)']]);
  });

  test('types not in `on` leave the view untouched', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    store.applyBatch([{ event: ev('create', 'a', { name: 'Mint' }) }, { event: ev('rename', 'a', { name: 'X' }) }, { event: { no: 'type' } }]);
    expect(rows(dir, 'SELECT id, name FROM ice')).toEqual([{ id: 'a', name: 'Mint' }]);
  });

  test('an event without its key is a bad event; the default is to fail the whole batch', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    const keyless = { header: { eventName: ['create'] }, payload: { name: 'Nobody' } };
    const bad: Array<[number, string]> = [];
    store.applyBatch([{ event: keyless }, { event: ev('create', 'a', { name: 'Mint' }) }], (i, m) => bad.push([i, m]));
    expect(bad).toEqual([[0, 'view ice: no key header.rel.id / id in a create event']]);
    expect(rows(dir, 'SELECT id FROM ice')).toEqual([{ id: 'a' }]);
    expect(() => store.applyBatch([at(1, ev('create', 'b')), at(2, keyless)])).toThrow(/event 2 of the batch: view ice: no key/);
    expect(rows(dir, 'SELECT id FROM ice')).toEqual([{ id: 'a' }]);
    expect(store.applied()).toEqual({});
  });

  test('a value that does not fit a typed column is a bad event', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    const bad: string[] = [];
    store.applyBatch([{ event: ev('create', 'a', { price: 'cheap' }) }, { event: ev('sale', 'a', { qty: 1.5 }) }, { event: ev('sale', 'a', {}) }], (_, m) => bad.push(m));
    expect(bad).toEqual([
      'view ice: column price (payload.price): expected a number, got "cheap"',
      'view ice: increment of sold (payload.qty): expected an integer, got 1.5',
      'view ice: increment of sold (payload.qty): missing in a sale event',
    ]);
    expect(rows(dir, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 0 }]);
  });
});

describe('column values', () => {
  const TYPED = `views:
  - table: t
    key: { column: product, path: payload.productId, type: integer }
    type: kind
    columns:
      any: payload.v
      text: { path: payload.v, type: text }
      int: { path: payload.n, type: integer }
      real: { path: payload.n, type: real }
      js: { path: payload.v, type: json }
      flag: { path: payload.b, type: boolean }
    on:
      put: upsert
`;

  test('objects and arrays are stored as JSON text, queryable with JSON functions', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, TYPED);
    store.applyBatch([{ event: { kind: 'put', payload: { productId: '7', v: { flavors: ['mint', 'fudge'] }, n: '3', b: true } } }]);
    expect(rows(dir, "SELECT product, typeof(product) AS kt, any, text, js, json_extract(js, '$.flavors[1]') AS second FROM t")).toEqual([
      { product: 7, kt: 'integer', any: '{"flavors":["mint","fudge"]}', text: '{"flavors":["mint","fudge"]}', js: '{"flavors":["mint","fudge"]}', second: 'fudge' },
    ]);
  });

  test('each column type stores its SQLite type', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, TYPED);
    store.applyBatch([
      { event: { kind: 'put', payload: { productId: 1, v: 'x', n: 3, b: false } } },
      { event: { kind: 'put', payload: { productId: 2, v: 12, n: '2.0', b: 'true' } } },
      { event: { kind: 'put', payload: { productId: 3, v: true } } },
    ]);
    expect(rows(dir, 'SELECT product, typeof(any) a, any, typeof(text) t, text, typeof(int) i, int, typeof(real) r, real, js, flag FROM t ORDER BY product')).toEqual([
      { product: 1, a: 'text', any: 'x', t: 'text', text: 'x', i: 'integer', int: 3, r: 'real', real: 3, js: '"x"', flag: 0 },
      { product: 2, a: 'integer', any: 12, t: 'text', text: '12', i: 'integer', int: 2, r: 'real', real: 2, js: '12', flag: 1 },
      { product: 3, a: 'integer', any: 1, t: 'text', text: 'true', i: 'null', int: null, r: 'null', real: null, js: 'true', flag: null },
    ]);
  });
});

describe('exactly once', () => {
  test('the same batch applied twice changes nothing', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    const batch = [at(10, ev('create', 'a', { name: 'Mint' })), at(11, ev('sale', 'a', { qty: 2 })), at(12, ev('sale', 'a', { qty: 3 }))];
    store.applyBatch(batch);
    store.applyBatch(batch);
    expect(rows(dir, 'SELECT id, sold FROM ice')).toEqual([{ id: 'a', sold: 5 }]);
    expect(store.applied()).toEqual({ 'file:a': '12' });
  });

  test('positions survive reopening; events at or below them are skipped, later ones applied', async () => {
    const dir = tempDir();
    const first = await storeFor(dir, ICE);
    first.applyBatch([at(1, ev('sale', 'a', { qty: 1 })), at(2, ev('sale', 'a', { qty: 1 }))]);
    first.close();
    const second = await storeFor(dir, ICE);
    expect(second.applied()).toEqual({ 'file:a': '2' });
    second.applyBatch([at(2, ev('sale', 'a', { qty: 1 })), at(3, ev('sale', 'a', { qty: 10 })), at(1, ev('sale', 'a', { qty: 1 }), 'file:b')]);
    expect(rows(dir, 'SELECT sold FROM ice')).toEqual([{ sold: 13 }]);
    expect(second.applied()).toEqual({ 'file:a': '3', 'file:b': '1' });
    expect(readViewsApplied(join(dir, 'v.db'), parseViews(ICE, join(dir, 'views.yaml')))).toEqual({ 'file:a': '3', 'file:b': '1' });
  });

  test('a failed batch leaves neither rows nor positions behind', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    expect(() => store.applyBatch([at(1, ev('sale', 'a', { qty: 1 })), at(2, ev('sale', 'a', { qty: 'x' }))])).toThrow(/expected an integer/);
    expect(rows(dir, 'SELECT count(*) AS n FROM ice')).toEqual([{ n: 0 }]);
    expect(rows(dir, 'SELECT count(*) AS n FROM cqp_positions')).toEqual([{ n: 0 }]);
    store.applyBatch([at(1, ev('sale', 'a', { qty: 1 }))]);
    expect(rows(dir, 'SELECT sold FROM ice')).toEqual([{ sold: 1 }]);
  });

  test("a replay's new database is written without a WAL; a failed batch still leaves nothing behind", async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE, 'v.db', true);
    expect(() => store.applyBatch([at(1, ev('sale', 'a', { qty: 1 })), at(2, ev('sale', 'a', { qty: 'x' }))])).toThrow(/expected an integer/);
    store.applyBatch([at(1, ev('sale', 'a', { qty: 1 })), at(2, ev('sale', 'a', { qty: 2 }))]);
    expect(existsSync(join(dir, 'v.db-wal'))).toBe(false);
    expect(rows(dir, 'SELECT sold FROM ice')).toEqual([{ sold: 3 }]);
    expect(rows(dir, 'SELECT source, n FROM cqp_positions')).toEqual([{ source: 'file:a', n: '2' }]);
  });

  test('events without a position are always applied', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    store.applyBatch([{ event: ev('sale', 'a', { qty: 1 }) }]);
    store.applyBatch([{ event: ev('sale', 'a', { qty: 1 }) }]);
    expect(rows(dir, 'SELECT sold FROM ice')).toEqual([{ sold: 2 }]);
    expect(store.applied()).toEqual({});
  });

  test('sub-positions of one input are applied once each', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    const batch = [at(5, ev('sale', 'a', { qty: 1 })), { event: ev('sale', 'a', { qty: 2 }), position: { source: 'file:a', n: '6.0' } }, { event: ev('sale', 'a', { qty: 4 }), position: { source: 'file:a', n: '6.1' } }];
    store.applyBatch(batch.slice(0, 2));
    store.applyBatch(batch);
    expect(rows(dir, 'SELECT sold FROM ice')).toEqual([{ sold: 7 }]);
    expect(store.applied()).toEqual({ 'file:a': '6.1' });
  });
});

describe('per-view positions', () => {
  const ONE = `views:
  - table: names
    columns: { name: payload.name }
    on: { create: upsert }
`;
  const TWO = `${ONE}  - table: counts
    key: payload.bucket
    columns: { n: { type: integer } }
    on: { create: { increment: { n: payload.one } } }
`;

  test('a view added to an existing database is built from the start; the others are untouched', async () => {
    const dir = tempDir();
    const events = Array.from({ length: 6 }, (_, i) => at(i + 1, ev('create', `k${i}`, { name: `n${i}`, bucket: i % 2 === 0 ? 'even' : 'odd', one: 1 })));
    const first = await storeFor(dir, ONE);
    first.applyBatch(events.slice(0, 4));
    first.close();
    const before = rows(dir, 'SELECT * FROM names ORDER BY id');

    const second = await storeFor(dir, TWO);
    expect(rows(dir, 'SELECT * FROM names ORDER BY id')).toEqual(before);
    expect(second.appliedBy('names')).toEqual({ 'file:a': '4' });
    // The new view holds nothing of file:a, so the source must start again from its beginning.
    expect(second.applied()).toEqual({});
    expect(readViewsApplied(join(dir, 'v.db'), parseViews(TWO, join(dir, 'views.yaml')))).toEqual({});
    second.applyBatch(events);
    expect(rows(dir, 'SELECT count(*) AS n FROM names')).toEqual([{ n: 6 }]);
    expect(rows(dir, 'SELECT id, n FROM counts ORDER BY id')).toEqual([
      { id: 'even', n: 3 },
      { id: 'odd', n: 3 },
    ]);
    expect(second.applied()).toEqual({ 'file:a': '6' });
  });

  test('a view whose definition changed is dropped and rebuilt from empty', async () => {
    const dir = tempDir();
    const first = await storeFor(dir, TWO);
    first.applyBatch([at(1, ev('create', 'a', { name: 'Mint', bucket: 'b', one: 1 }))]);
    first.close();
    const changed = TWO.replace('columns: { name: payload.name }', 'columns: { title: payload.name }');
    const second = await storeFor(dir, changed);
    expect(rows(dir, 'SELECT * FROM names')).toEqual([]);
    expect(rows(dir, 'SELECT id, n FROM counts')).toEqual([{ id: 'b', n: 1 }]);
    expect(second.appliedBy('names')).toEqual({});
    expect(second.appliedBy('counts')).toEqual({ 'file:a': '1' });
    second.applyBatch([at(1, ev('create', 'a', { name: 'Mint', bucket: 'b', one: 1 }))]);
    expect(rows(dir, 'SELECT * FROM names')).toEqual([{ id: 'a', title: 'Mint' }]);
    expect(rows(dir, 'SELECT id, n FROM counts')).toEqual([{ id: 'b', n: 1 }]);
  });

  test('a view left out of the file keeps its table and its positions', async () => {
    const dir = tempDir();
    const first = await storeFor(dir, TWO);
    first.applyBatch([at(1, ev('create', 'a', { name: 'Mint', bucket: 'b', one: 1 }))]);
    first.close();
    const second = await storeFor(dir, ONE);
    second.applyBatch([at(2, ev('create', 'b', { name: 'Fudge', bucket: 'b', one: 1 }))]);
    expect(rows(dir, 'SELECT id, n FROM counts')).toEqual([{ id: 'b', n: 1 }]);
    expect(rows(dir, "SELECT n FROM cqp_positions WHERE view = 'counts'")).toEqual([{ n: '1' }]);
  });

  test('a table cqp did not build is never dropped', async () => {
    const dir = tempDir();
    const d = new Database(join(dir, 'v.db'));
    d.exec("CREATE TABLE names (x); INSERT INTO names VALUES ('mine')");
    d.close();
    await expect(storeFor(dir, ONE)).rejects.toThrow(/table "names" already exists in .*v\.db and is not a view cqp built/);
    expect(rows(dir, 'SELECT x FROM names')).toEqual([{ x: 'mine' }]);
  });
});

describe('handler modules', () => {
  const HANDLER = `export default {
  init(sql) {
    sql.run('CREATE TABLE totals (type TEXT PRIMARY KEY, n INTEGER NOT NULL)');
  },
  handle(event, sql) {
    if (event.payload && event.payload.boom) throw new Error('boom');
    const type = event.header.eventName[0];
    sql.run('INSERT INTO totals (type, n) VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1', type);
    if (event.payload && event.payload.late) throw new Error('late boom');
    const row = sql.get('SELECT n FROM totals WHERE type = ?', type);
    if (row.n > 100) throw new Error('too many');
  },
};
`;
  const VIEWS = 'views:\n  - table: totals\n    handler: ./totals.mjs\n';

  test('a handler keeps its tables, within the batch transaction and exactly once', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'totals.mjs'), HANDLER);
    const store = await storeFor(dir, VIEWS);
    const batch = [at(1, ev('create', 'a')), at(2, ev('sale', 'a')), at(3, ev('sale', 'a'))];
    store.applyBatch(batch);
    store.applyBatch(batch);
    expect(rows(dir, 'SELECT * FROM totals ORDER BY type')).toEqual([
      { type: 'create', n: 1 },
      { type: 'sale', n: 2 },
    ]);
  });

  test('an event the handler throws on is a bad event, and its partial writes are undone', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'totals.mjs'), HANDLER);
    const store = await storeFor(dir, VIEWS);
    const bad: Array<[number, string]> = [];
    store.applyBatch([{ event: ev('sale', 'a', { late: true }) }, { event: ev('sale', 'b') }, { event: ev('sale', 'c', { boom: true }) }], (i, m) => bad.push([i, m]));
    expect(bad).toEqual([
      [0, 'view totals: handler failed: late boom'],
      [2, 'view totals: handler failed: boom'],
    ]);
    expect(rows(dir, 'SELECT * FROM totals')).toEqual([{ type: 'sale', n: 1 }]);
  });

  test('changing the module rebuilds the view: its tables are dropped and init runs again', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'totals.mjs'), HANDLER);
    const first = await storeFor(dir, VIEWS);
    first.applyBatch([at(1, ev('create', 'a'))]);
    first.close();
    writeFileSync(join(dir, 'totals.mjs'), HANDLER.replace('n INTEGER NOT NULL', 'n INTEGER NOT NULL, extra TEXT'));
    const second = await storeFor(dir, VIEWS);
    expect(rows(dir, 'SELECT * FROM totals')).toEqual([]);
    expect(second.applied()).toEqual({});
    second.applyBatch([at(1, ev('create', 'a'))]);
    expect(rows(dir, 'SELECT * FROM totals')).toEqual([{ type: 'create', n: 1, extra: null }]);
  });

  test('the example flavour handler keeps counts per flavour', async () => {
    const dir = tempDir();
    const file = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');
    const { loadViewsFile } = await import('../../src/views/definition.js');
    const store = await ViewStore.open(join(dir, 'v.db'), loadViewsFile(file));
    open.push(store);
    store.applyBatch([
      { event: ev('create.ice_cream', 'a', { name: 'A', flavors: ['mint', 'fudge'] }) },
      { event: ev('create.ice_cream', 'b', { name: 'B', flavors: ['mint'] }) },
      { event: ev('update.ice_cream', 'a', { flavors: ['fudge', 'cherry'] }) },
      { event: ev('delete.ice_cream', 'b') },
    ]);
    expect(rows(dir, 'SELECT flavor, ice_creams FROM flavor_counts ORDER BY flavor')).toEqual([
      { flavor: 'cherry', ice_creams: 1 },
      { flavor: 'fudge', ice_creams: 1 },
      { flavor: 'mint', ice_creams: 0 },
    ]);
  });

  test('a module without handle is a configuration error', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'totals.mjs'), 'export default { init() {} };\n');
    await expect(storeFor(dir, VIEWS)).rejects.toThrow(/must export default \{ init\?\(sql\), handle\(event, sql\) \}/);
  });
});

describe('the default events table', () => {
  test('keeps one row per event with id, type, key, time and body', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, undefined);
    const a = ev('create.ice_cream', 'r1', { name: 'Mint' });
    store.applyBatch([
      { event: a, text: JSON.stringify(a), position: { source: 'log:x', n: '1' } },
      { event: { id: 'e2', type: 'ping', time: '2024-01-01T00:00:00Z' }, position: { source: 'log:x', n: '2' } },
    ]);
    store.applyBatch([{ event: a, position: { source: 'log:x', n: '1' } }]);
    expect(rows(dir, "SELECT seq, event_id, type, entity_key, time, json_extract(body, '$.payload.name') AS name FROM events")).toEqual([
      { seq: 1, event_id: 'events/create.ice_cream-r1', type: 'create.ice_cream', entity_key: 'r1', time: '2022-05-30T08:49:46.745Z', name: 'Mint' },
      { seq: 2, event_id: 'e2', type: 'ping', entity_key: 'e2', time: '2024-01-01T00:00:00Z', name: null },
    ]);
    expect(store.applied()).toEqual({ 'log:x': '2' });
    expect(readViewsApplied(join(dir, 'v.db'), undefined)).toEqual({ 'log:x': '2' });
  });

  test('the database is in WAL mode', async () => {
    const dir = tempDir();
    await storeFor(dir, undefined);
    expect(rows(dir, 'PRAGMA journal_mode')).toEqual([{ journal_mode: 'wal' }]);
  });

  test('readViewsApplied of a missing file holds nothing', () => {
    expect(readViewsApplied(join(tempDir(), 'none.db'), undefined)).toEqual({});
  });
});

describe('against an independent computation', () => {
  test('N generated events give the rows plain JavaScript computes', async () => {
    const dir = tempDir();
    const store = await storeFor(dir, ICE);
    let seed = 42;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const expected = new Map<string, { name: string | null; price: number | null; sold: number }>();
    const events: ViewEvent[] = [];
    for (let i = 0; i < 20_000; i++) {
      const id = `k${Math.floor(random() * 300)}`;
      const r = random();
      const row = expected.get(id);
      if (!row || r < 0.2) {
        const name = `n${i}`;
        const price = Math.round(random() * 1000) / 100;
        events.push(at(i, ev('create', id, { name, price })));
        expected.set(id, { name, price, sold: row?.sold ?? 0 });
      } else if (r < 0.5) {
        const price = Math.round(random() * 1000) / 100;
        events.push(at(i, ev('update', id, { price })));
        row.price = price;
      } else if (r < 0.9) {
        const qty = 1 + Math.floor(random() * 5);
        events.push(at(i, ev('sale', id, { qty })));
        row.sold += qty;
      } else {
        events.push(at(i, ev('delete', id)));
        expected.delete(id);
      }
    }
    // Overlapping batches, as a restarted source would send: each event must count once.
    for (let start = 0; start < events.length; start += 700) store.applyBatch(events.slice(Math.max(0, start - 150), start + 700));
    const want = [...expected].map(([id, r]) => ({ id, ...r })).sort((a, b) => (a.id < b.id ? -1 : 1));
    expect(rows(dir, 'SELECT id, name, price, sold FROM ice ORDER BY id')).toEqual(want);
  });
});
