/**
 * The postgres sink against the real server: each test its own schema (dropped afterwards), the views
 * compared with an independent fold of the events and with the sqlite sink's views of the same log.
 */
import { createServer, Socket, type Server } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cqp, cqpAsync, collect, parseLines, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { service, uniqueName } from '../helpers/services.js';
import { client, fold, pgViews, positionOf, sqliteViews, URL_, VIEWS, type Row } from '../helpers/pg-views.js';

const up = await service('postgres');
const EVENTS = 20_000;

describe.skipIf(!up)('postgres sink', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-pg-'));
  const log = join(dir, 'e.log');
  const views = join(dir, 'views.yaml');
  const schemas: string[] = [];
  const schema = (): string => {
    const s = uniqueName('cqp_test');
    schemas.push(s);
    return s;
  };
  let events: Row[] = [];

  beforeAll(() => {
    writeFileSync(views, VIEWS);
    const demo = cqp(['source', 'demo', '--count', String(EVENTS), '--seed', '7', '--entities', '300']);
    expect(demo.status).toBe(0);
    const sink = cqp(['sink', 'log', '--path', log], { input: demo.stdout });
    expect(sink.stderr).toBe('');
    events = parseLines(cqp(['log', 'cat', log]).stdout);
    expect(events).toHaveLength(EVENTS);
  });

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    const c = await client();
    for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    await c.end();
  });

  test('kill -9 mid-stream three times, then a re-run: the views equal a fold of the events and the sqlite sink’s views', async () => {
    const s = schema();
    const args = ['postgres', '--url', URL_, '--schema', s, '--views', views, '--read-log', log];
    let last = 0;
    for (let k = 0; k < 3; k++) {
      const sink = spawnCli('sink', args, { cwd: dir });
      const done = collect(sink);
      // Killed once it has committed some batches past the last kill, before the end of the log.
      const at = await eventually(async () => {
        const n = await positionOf(s);
        return n > last ? n : false;
      }, { what: `sink run ${k + 1} to commit past seq ${last}`, everyMs: 10 });
      sink.kill('SIGKILL');
      const r = await done;
      expect(r.signal === 'SIGKILL' || r.status === 0).toBe(true);
      last = Math.max(at, await positionOf(s));
      // Mid-stream: the log was not yet all applied.
      expect(last).toBeLessThan(EVENTS);
    }
    expect(last).toBeGreaterThan(0);
    const final = await cqpAsync(['sink', ...args], { cwd: dir });
    expect(final.stderr).toBe('');
    expect(final.status).toBe(0);
    expect(await positionOf(s)).toBe(EVENTS);

    const db = join(dir, 'views.db');
    const lite = cqp(['sink', 'sqlite', '--db', db, '--views', views, '--read-log', log]);
    expect(lite.status).toBe(0);
    const got = await pgViews(s);
    const expected = fold(events);
    expect(got.ice_creams.length).toBeGreaterThan(50);
    expect(got.sales.length).toBeGreaterThan(10);
    expect(got).toEqual(expected);
    expect(got).toEqual(sqliteViews(db));
  });

  test('a second writer on the same schema is refused, naming the first', async () => {
    const s = schema();
    const first = spawnCli('sink', ['postgres', '--url', URL_, '--schema', s, '--views', views, '--read-log', log, '--follow'], { cwd: dir });
    const firstDone = collect(first);
    await eventually(async () => (await positionOf(s)) === EVENTS, { what: 'the first sink to catch up with the log' });
    const second = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', views, '--read-log', log], { cwd: dir });
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`schema "${s}": cqp sink postgres .* pid ${first.pid} \\(server pid \\d+\\) is writing it; one writer per schema at a time`));
    first.kill('SIGTERM');
    const r = await firstDone;
    expect(r.status).toBe(0);
    // Once the first has stopped, the lock is free again.
    const third = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', views, '--read-log', log], { cwd: dir });
    expect(third.stderr).toBe('');
    expect(third.status).toBe(0);
  });

  test('an unreachable server is a clear error at start', async () => {
    const r = await cqpAsync(['sink', 'postgres', '--url', 'postgres://postgres@127.0.0.1:1/test', '--views', views], { cwd: dir, input: '' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot connect to PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/test: .*ECONNREFUSED.* \(is the server running and the URL right\?\)/);
  });

  test('integers beyond 2^53 stay exact; inserts of an existing key and NUL characters are bad events, named', async () => {
    const s = schema();
    const file = join(dir, 'big.yaml');
    writeFileSync(
      file,
      `views:
  - table: counters
    key: { column: k, path: id, type: integer }
    columns:
      label: name
      total: { type: integer }
    on:
      new: insert
      set: upsert
      add: { increment: { total: n } }
      drop: delete
`,
    );
    const lines = [
      '{"type":"new","id":9007199254740993,"name":"big"}',
      '{"type":"add","id":9007199254740993,"n":9007199254740993}',
      '{"type":"add","id":9007199254740993,"n":2}',
      '{"type":"new","id":9007199254740993,"name":"again"}',
      '{"type":"set","id":5,"name":"a\\u0000b"}',
      '{"type":"set","id":6,"name":"six"}',
      '{"type":"drop","id":6}',
      '{"type":"set","id":6}',
      '{"type":"add","id":7,"n":1}',
      '{"type":"drop","id":7}',
      '{"type":"add","id":7,"n":4}',
    ];
    const r = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file, '--on-error', 'skip'], { cwd: dir, input: `${lines.join('\n')}\n` });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/stdin:4: view counters: counters already has a row with key "9007199254740993" \(insert adds new rows; use upsert to update them\)/);
    expect(r.stderr).toMatch(/stdin:5: view counters: column label \(name\): PostgreSQL cannot store the NUL character/);
    const c = await client();
    try {
      const rows = await c.query(`SELECT k::text, label, total::text FROM "${s}".counters ORDER BY k`);
      expect(rows.rows).toEqual([
        { k: '6', label: null, total: '0' },
        { k: '7', label: null, total: '4' },
        { k: '9007199254740993', label: 'big', total: '9007199254740995' },
      ]);
    } finally {
      await c.end();
    }
  });

  test('text that array and string literals escape (quotes, backslashes, braces, commas, NULL) is stored as written, in keys, columns and the events table', async () => {
    const s = schema();
    const file = join(dir, 'quotes.yaml');
    writeFileSync(
      file,
      'views:\n  - table: odd\n    key: id\n    columns:\n      name: name\n      doc: { path: doc, type: json }\n      amount: { type: real }\n    on:\n      put: upsert\n      gone: delete\n      add: { increment: { amount: n } }\n',
    );
    const odd = ['it\'s', 'a "quoted" word', 'back\\slash \\" \\\\', '{braces},commas', 'NULL', '', 'line\nbreak\ttab', 'ünïcødé ☃', "E'x'", '$1 $$'];
    const events = odd.map((text, i) => ({ type: 'put', id: `${text}#${i}`, name: text, doc: { text, list: [text] } }));
    // Two additions of reals to one row in a batch (an incremented column starts at 0), and a key deleted then put again.
    const more = [{ type: 'gone', id: `${odd[0]}#0` }, { type: 'put', id: `${odd[0]}#0`, name: 'again' }, { type: 'add', id: 'sum', n: 0.1 }, { type: 'add', id: 'sum', n: 0.2 }];
    const input = `${[...events, ...more].map((e) => JSON.stringify(e)).join('\n')}\n`;
    const r = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file], { cwd: dir, input });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const plainSchema = schema();
    const all = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', plainSchema], { cwd: dir, input });
    expect(all.stderr).toBe('');
    const c = await client();
    try {
      const rows = await c.query<{ id: string; name: string | null; doc: unknown; amount: number | null }>(`SELECT id, name, doc, amount FROM "${s}".odd ORDER BY id COLLATE "C"`);
      const expected = [
        ...events.map((e, i) => (i === 0 ? { id: e.id, name: 'again', doc: null, amount: 0 } : { id: e.id, name: e.name, doc: e.doc, amount: 0 })),
        { id: 'sum', name: null, doc: null, amount: 0.1 + 0.2 },
      ].sort((a, b) => Buffer.compare(Buffer.from(a.id), Buffer.from(b.id)));
      expect(rows.rows).toEqual(expected);
      const stored = await c.query<{ body: unknown }>(`SELECT body FROM "${plainSchema}".events ORDER BY seq`);
      expect(stored.rows.map((x) => x.body)).toEqual([...events, ...more]);
    } finally {
      await c.end();
    }
  });

  test('values PostgreSQL would refuse (a lone surrogate, a number beyond numeric) are bad events, named, not a failed batch; an escaped backslash before u0000 is text', async () => {
    const s = schema();
    const file = join(dir, 'refused.yaml');
    writeFileSync(file, 'views:\n  - table: r\n    key: id\n    columns:\n      name: name\n      doc: { path: doc, type: json }\n    on:\n      put: upsert\n');
    const lines = [
      '{"type":"put","id":"a","name":"\\\\u0000 is text","doc":{"t":"\\\\u0000"}}',
      '{"type":"put","id":"\\ud800","name":"x"}',
      '{"type":"put","id":"\\udc00","name":"y"}',
      '{"type":"put","id":"b","name":"lone \\udfff"}',
      '{"type":"put","id":"c","doc":{"t":"\\ud83d"}}',
      '{"type":"put","id":"d","name":"pair \\ud83d\\ude00"}',
    ];
    const input = `${lines.join('\n')}\n`;
    const r = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file, '--on-error', 'skip'], { cwd: dir, input });
    expect(r.status).toBe(0);
    for (const n of [2, 3, 4, 5]) expect(r.stderr).toMatch(new RegExp(`stdin:${n}: view r: .*lone UTF-16 surrogate`));
    expect(r.stderr).not.toMatch(/stdin:[16]:/);
    const plainSchema = schema();
    const plainInput = `${[lines[0], lines[1], '{"type":"put","n":1e131072}', '{"type":"put","n":"1e131072","m":0.5e-16382}'].join('\n')}\n`;
    const all = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', plainSchema, '--on-error', 'skip'], { cwd: dir, input: plainInput });
    expect(all.status).toBe(0);
    expect(all.stderr).toMatch(/stdin:2: view events: .*lone UTF-16 surrogate/);
    expect(all.stderr).toMatch(/stdin:3: view events: .*beyond PostgreSQL's numeric/);
    expect(all.stderr).not.toMatch(/stdin:[14]:/);
    const c = await client();
    try {
      const rows = await c.query<{ id: string; name: string | null; doc: unknown }>(`SELECT id, name, doc FROM "${s}".r ORDER BY id`);
      expect(rows.rows).toEqual([
        { id: 'a', name: '\\u0000 is text', doc: { t: '\\u0000' } },
        { id: 'd', name: 'pair \u{1F600}', doc: null },
      ]);
      const stored = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM "${plainSchema}".events`);
      expect(stored.rows).toEqual([{ n: '2' }]);
    } finally {
      await c.end();
    }
  });

  test('cqp query postgres://… prints rows (a table, or NDJSON with exact numbers); a write is refused and changes nothing', async () => {
    const s = schema();
    const file = join(dir, 'q.yaml');
    writeFileSync(file, 'views:\n  - table: things\n    key: id\n    columns:\n      name: name\n      n: { path: n, type: integer }\n      tags: { path: tags, type: json }\n    on:\n      thing: upsert\n');
    const input = '{"type":"thing","id":"a","name":"Apple","n":9223372036854775807,"tags":["x",1]}\n{"type":"thing","id":"b","name":"Banana","n":2}\n';
    const r = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file], { cwd: dir, input });
    expect(r.stderr).toBe('');
    const table = await cqpAsync(['query', URL_, `SELECT id, name, n, tags FROM "${s}".things ORDER BY id`]);
    expect(table.stderr).toBe('');
    expect(table.stdout).toBe(
      'id  name                      n  tags\n' +
        '--  ------  -------------------  -------\n' +
        'a   Apple   9223372036854775807  ["x",1]\n' +
        'b   Banana                    2\n' +
        '(2 rows)\n',
    );
    const json = await cqpAsync(['query', URL_, `SELECT id, n, tags FROM "${s}".things ORDER BY id`, '--json']);
    expect(json.stdout).toBe('{"id":"a","n":9223372036854775807,"tags":["x",1]}\n{"id":"b","n":2,"tags":null}\n');
    const write = await cqpAsync(['query', URL_, `DELETE FROM "${s}".things`]);
    expect(write.status).toBe(2);
    expect(write.stderr).toMatch(/the query writes \(cannot execute DELETE in a read-only transaction\); cqp query runs read-only/);
    const sneaky = await cqpAsync(['query', URL_, `SELECT 1; COMMIT; DELETE FROM "${s}".things`]);
    expect(sneaky.status).toBe(2);
    expect(sneaky.stderr).toMatch(/give one statement/);
    const after = await cqpAsync(['query', URL_, `SELECT count(*) AS c FROM "${s}".things`, '--json']);
    expect(after.stdout).toBe('{"c":2}\n');
  });

  test('a handler module gets a PostgreSQL SQL helper; a view redefined is rebuilt from the log', async () => {
    const s = schema();
    const file = join(dir, 'handler.yaml');
    writeFileSync(join(dir, 'types.mjs'), `export default {
  async init(sql) { await sql.run('CREATE TABLE type_counts (type text PRIMARY KEY, n bigint NOT NULL)'); },
  handle(event, sql) {
    // Not awaited: the helper still runs it, in order, inside the batch's transaction.
    sql.run('INSERT INTO type_counts VALUES ($1, 1) ON CONFLICT (type) DO UPDATE SET n = type_counts.n + 1', event.header.eventName[0]);
  },
};
`);
    writeFileSync(file, 'views:\n  - table: type_counts\n    handler: ./types.mjs\n');
    const until = '1500';
    const run = (): Promise<ReturnType<typeof cqp>> =>
      cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file, '--read-log', log, '--until', until], { cwd: dir });
    let r = await run();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const expected = new Map<string, number>();
    for (const e of events.slice(0, 1500)) {
      const t = (e.header as { eventName: string[] }).eventName[0] as string;
      expected.set(t, (expected.get(t) ?? 0) + 1);
    }
    const counts = async (): Promise<Map<string, number>> => {
      const c = await client();
      try {
        const rows = await c.query<{ type: string; n: string }>(`SELECT type, n::text FROM "${s}".type_counts`);
        return new Map(rows.rows.map((x) => [x.type, Number(x.n)]));
      } finally {
        await c.end();
      }
    };
    expect(await counts()).toEqual(expected);
    // Run again: nothing is applied twice.
    r = await run();
    expect(r.status).toBe(0);
    expect(await counts()).toEqual(expected);
    // The module changed: the view is built anew and fed from the start of the log.
    writeFileSync(join(dir, 'types.mjs'), `export default {
  async init(sql) { await sql.run('CREATE TABLE type_counts (type text PRIMARY KEY, n bigint NOT NULL)'); },
  async handle(event, sql) {
    await sql.run('INSERT INTO type_counts VALUES ($1, 10) ON CONFLICT (type) DO UPDATE SET n = type_counts.n + 10', event.header.eventName[0]);
  },
};
`);
    r = await run();
    expect(r.status).toBe(0);
    expect(await counts()).toEqual(new Map([...expected].map(([t, n]) => [t, n * 10])));
  });

  test('a handler event that fails leaves none of its writes, whether it wrote before failing or not; events it ignores write nothing', async () => {
    const s = schema();
    const file = join(dir, 'failing.yaml');
    // Sales are ignored (no query); every 7th update writes, then fails; every 5th create fails before writing.
    writeFileSync(join(dir, 'failing.mjs'), `export default {
  async init(sql) { await sql.run('CREATE TABLE seen (id text NOT NULL, type text NOT NULL, n bigint PRIMARY KEY)'); },
  async handle(event, sql) {
    const type = event.header.eventName[0];
    const n = Number(event['@n']);
    if (type === 'sale.ice_cream') return;
    if (type === 'create.ice_cream' && n % 5 === 0) throw new Error('no create ' + n);
    await sql.run('INSERT INTO seen VALUES ($1, $2, $3)', event.header.rel.id, type, n);
    if (type === 'update.ice_cream' && n % 7 === 0) { await sql.run('INSERT INTO seen VALUES ($1, $2, $3)', 'again', type, -n); throw new Error('no update ' + n); }
  },
};
`);
    writeFileSync(file, 'views:\n  - table: seen\n    handler: ./failing.mjs\n');
    const numbered = events.slice(0, 1500).map((e, i) => ({ ...(e as { header: { eventName: string[]; rel: { id: string } } }), '@n': i + 1 }));
    const r = await cqpAsync(['sink', 'postgres', '--url', URL_, '--schema', s, '--views', file, '--on-error', 'skip'], {
      cwd: dir,
      input: numbered.map((e) => JSON.stringify(e)).join('\n') + '\n',
    });
    expect(r.status, r.stderr).toBe(0);
    const type = (e: (typeof numbered)[number]): string => e.header.eventName[0] as string;
    const kept = numbered.filter((e) => {
      const t = type(e);
      return t !== 'sale.ice_cream' && !(t === 'create.ice_cream' && e['@n'] % 5 === 0) && !(t === 'update.ice_cream' && e['@n'] % 7 === 0);
    });
    const failed = numbered.length - kept.length - numbered.filter((e) => type(e) === 'sale.ice_cream').length;
    expect(failed).toBeGreaterThan(20);
    expect(r.stderr).toMatch(/handler failed: no (create|update) \d+/);
    const c = await client();
    try {
      const rows = await c.query<{ n: string }>(`SELECT n FROM "${s}".seen ORDER BY n`);
      expect(rows.rows.map((x) => Number(x.n))).toEqual(kept.map((e) => e['@n']));
    } finally {
      await c.end();
    }
  });

  test('positions changed in the database under a running sink are the ones its next batch goes by', async () => {
    const s = schema();
    const part = join(dir, 'moved.log');
    const demo = cqp(['source', 'demo', '--count', '300', '--seed', '3']);
    cqp(['sink', 'log', '--path', part], { input: demo.stdout });
    const sink = spawnCli('sink', ['postgres', '--url', URL_, '--schema', s, '--read-log', part, '--follow'], { cwd: dir });
    let stderr = '';
    sink.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = collect(sink);
    try {
      await eventually(async () => (await positionOf(s)) === 300, { what: () => `the sink to catch up with the first 300 events; stderr: ${stderr}` });
      // The sink holds 300 as the events table's position; the database now says 400 were applied.
      const c = await client();
      try {
        expect((await c.query(`UPDATE "${s}".cqp_positions SET n = '400' WHERE view = 'events'`)).rowCount).toBe(1);
      } finally {
        await c.end();
      }
      const more = cqp(['source', 'demo', '--count', '200', '--seed', '4']);
      cqp(['sink', 'log', '--path', part], { input: more.stdout });
      await eventually(async () => (await positionOf(s)) === 500, { what: () => `the sink to reach 500; stderr: ${stderr}` });
      sink.kill('SIGTERM');
      const r = await done;
      expect(r.status).toBe(0);
      expect(stderr).toBe('');
      // Events 301-400 count as applied: only 401-500 were written after the first 300.
      const ids = parseLines((await cqpAsync(['query', URL_, `SELECT event_id FROM "${s}".events ORDER BY seq`, '--json'])).stdout).map((x) => x.event_id);
      const id = (e: Row): unknown => (e.header as { eventId: string }).eventId;
      expect(ids).toEqual([...parseLines(demo.stdout).map(id), ...parseLines(more.stdout).slice(100).map(id)]);
    } finally {
      sink.kill('SIGKILL');
    }
  });

  test('a dropped connection under a running sink: it retries, reconnects and loses nothing', async () => {
    const s = schema();
    // A TCP proxy the test cuts: every open connection destroyed, new ones refused until it is let through again.
    const sockets = new Set<Socket>();
    let open = true;
    const proxy: Server = createServer((inbound) => {
      if (!open) {
        inbound.destroy();
        return;
      }
      const outbound = new Socket();
      outbound.connect(5432, '127.0.0.1');
      for (const sock of [inbound, outbound]) {
        sockets.add(sock);
        sock.on('error', () => undefined);
        sock.on('close', () => sockets.delete(sock));
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const port = (proxy.address() as { port: number }).port;
    const proxied = `postgres://postgres@127.0.0.1:${port}/test`;
    const part = join(dir, 'part.log');
    const first = cqp(['source', 'demo', '--count', '2000', '--seed', '7', '--entities', '300']);
    cqp(['sink', 'log', '--path', part], { input: first.stdout });
    const sink = spawnCli('sink', ['postgres', '--url', proxied, '--schema', s, '--views', views, '--read-log', part, '--follow'], { cwd: dir });
    let stderr = '';
    sink.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = collect(sink);
    try {
      await eventually(async () => (await positionOf(s)) === 2000, { what: 'the sink to catch up with the first 2000 events' });
      open = false;
      for (const sock of sockets) sock.destroy();
      // More events while the server cannot be reached: the sink must retry until it can.
      const more = cqp(['source', 'demo', '--count', String(EVENTS), '--seed', '7', '--entities', '300']);
      const appended = cqp(['sink', 'log', '--path', part], { input: more.stdout });
      expect(appended.status).toBe(0);
      await eventually(() => /retrying in/.test(stderr), { what: () => `the sink to say it retries; stderr: ${stderr}` });
      open = true;
      await eventually(async () => (await positionOf(s)) === EVENTS, { what: () => `the sink to catch up after the cut; stderr: ${stderr}` });
      expect(stderr).toMatch(/connected again/);
      sink.kill('SIGTERM');
      const r = await done;
      expect(r.status).toBe(0);
      expect(await pgViews(s)).toEqual(fold(events));
    } finally {
      sink.kill('SIGKILL');
      for (const sock of sockets) sock.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});
