import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { BIN, collect, cqp, cqpAsync, type CliResult } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-views-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VIEWS = `views:
  - table: sold
    key: header.rel.id
    columns:
      qty: { type: integer }
    on:
      sale.ice_cream: { increment: { qty: payload.qty } }
`;
writeFileSync(join(dir, 'views.yaml'), VIEWS);


/** The `sold` view as {key: qty}; empty while the table does not exist yet. */
function soldView(db: string): Record<string, number> {
  if (!existsSync(db)) return {};
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const rows = d.prepare('SELECT id, qty FROM sold').all() as Array<{ id: string; qty: number }>;
    return Object.fromEntries(rows.map((r) => [r.id, r.qty]));
  } catch {
    return {};
  } finally {
    d.close();
  }
}

const total = (view: Record<string, number>): number => Object.values(view).reduce((a, b) => a + b, 0);

interface Sink {
  child: ChildProcess;
  done: Promise<CliResult>;
  exited: boolean;
}

const started: Sink[] = [];
// A failed test leaves no sink behind following the log.
afterEach(() => {
  for (const sink of started.splice(0)) if (!sink.exited) sink.child.kill('SIGKILL');
});

function startSink(args: string[]): Sink {
  const child = spawn(process.execPath, [BIN.sink, 'sqlite', ...args], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin?.on('error', () => undefined);
  const sink: Sink = { child, done: collect(child), exited: false };
  void sink.done.then(() => {
    sink.exited = true;
  });
  started.push(sink);
  return sink;
}

describe('one writer per views database', () => {
  // The log every test here reads, and its `sold` view folded independently from the log's events.
  const expected: Record<string, number> = {};
  let want = 0;
  beforeAll(async () => {
    const demo = await cqpAsync(['demo', '--count', '20000', '--seed', '7'], { bin: 'source' });
    expect((await cqpAsync(['log', '--path', 'e.log'], { bin: 'sink', cwd: dir, input: demo.stdout })).status).toBe(0);
    const cat = cqp(['log', 'cat', 'e.log'], { cwd: dir });
    for (const line of cat.stdout.trimEnd().split('\n')) {
      const e = JSON.parse(line) as { header: { eventName: string[]; rel: { id: string } }; payload: { qty?: number } };
      if (e.header.eventName[0] === 'sale.ice_cream') expected[e.header.rel.id] = (expected[e.header.rel.id] ?? 0) + (e.payload.qty ?? 0);
    }
    want = total(expected);
    expect(want).toBeGreaterThan(0);
  }, 60_000);

  test('two cqp-sink sqlite --read-log on one database: the second is refused, every sale counts once', async () => {
    const db = join(dir, 'two.db');
    const args = ['--db', 'two.db', '--views', 'views.yaml', '--read-log', 'e.log', '--follow'];
    const a = startSink(args);
    const b = startSink(args);
    // Both following: wait until one is refused and the other has caught up, or until sales count twice.
    await eventually(() => ((a.exited || b.exited) && total(soldView(db)) === want) || total(soldView(db)) > want, {
      what: () => `one writer refused and the view caught up (sold ${total(soldView(db))} of ${want})`,
    });
    const [loser, winner] = a.exited ? [a, b] : [b, a];
    for (const sink of [a, b]) if (!sink.exited) sink.child.kill('SIGTERM');
    const [lost, won] = await Promise.all([loser.done, winner.done]);
    expect(soldView(db)).toEqual(expected);
    expect(lost.status).toBe(1);
    expect(lost.stderr).toContain(`two.db is locked by another writer (pid ${winner.child.pid})`);
    expect(won.status).toBe(0);
  }, 120_000);

  test('a replay into the database a live sink writes is refused, and runs once that sink has stopped', async () => {
    const db = join(dir, 'live.db');
    writeFileSync(join(dir, 'replay.yaml'), 'name: p\nsource: { type: stdin }\nsinks:\n  - { name: views, type: sqlite, db: live.db, views: views.yaml }\n');
    const live = startSink(['--db', 'live.db', '--views', 'views.yaml', '--read-log', 'e.log', '--follow']);
    await eventually(() => total(soldView(db)) === want || live.exited, { what: () => `the live sink to catch up (sold ${total(soldView(db))} of ${want})` });
    const refused = await cqpAsync(['replay', '--log', 'e.log', '--pipeline', 'replay.yaml'], { cwd: dir });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`live.db is locked by another writer (pid ${live.child.pid})`);
    live.child.kill('SIGTERM');
    expect((await live.done).status).toBe(0);
    expect(soldView(db)).toEqual(expected);
    const replayed = await cqpAsync(['replay', '--log', 'e.log', '--pipeline', 'replay.yaml'], { cwd: dir });
    expect(replayed.status).toBe(0);
    expect(soldView(db)).toEqual(expected);
  }, 120_000);

  test('an event another writer already applied is skipped, though the sink read its positions long before', async () => {
    const db = join(dir, 'stale.db');
    const sale = (n: number): string => `{"header":{"eventName":["sale.ice_cream"],"rel":{"id":"a"}},"payload":{"qty":1},"@cqp":"t:${n}"}\n`;
    const sink = startSink(['--db', 'stale.db', '--views', 'views.yaml']);
    sink.child.stdin?.write([1, 2, 3].map(sale).join(''));
    await eventually(() => soldView(db)['a'] === 3 || sink.exited, { what: 'the first three sales in the view' });
    // Another writer (here a plain connection, as if the lock were bypassed) applies sales 4–6.
    const other = new Database(db);
    other.pragma('busy_timeout = 10000');
    other.transaction(() => {
      other.prepare("UPDATE sold SET qty = qty + 3 WHERE id = 'a'").run();
      other.prepare("UPDATE cqp_positions SET n = '6' WHERE view = 'sold' AND source = 't'").run();
    }).immediate();
    other.close();
    sink.child.stdin?.end([4, 5, 6, 7, 8].map(sale).join(''));
    const result = await sink.done;
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(soldView(db)).toEqual({ a: 8 });
  }, 60_000);

  test('the sqlite sink creates the folders of its --db path', async () => {
    const input = '{"id":"x","type":"t"}\n';
    const result = await cqpAsync(['sqlite', '--db', 'made/by/sink/v.db'], { bin: 'sink', cwd: dir, input });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(existsSync(join(dir, 'made/by/sink/v.db'))).toBe(true);
  });

  const mountPoint = join(dir, 'tiny');
  mkdirSync(mountPoint);
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]).status === 0;
  afterAll(() => {
    if (mounted) spawnSync('umount', [mountPoint]);
  });
  test.skipIf(!mounted)('a full disk is reported naming the database file', async () => {
    // skipIf: mounting a 1 MiB tmpfs needs root, which this machine does not give.
    const demo = await cqpAsync(['demo', '--count', '10000', '--seed', '3'], { bin: 'source' });
    const result = await cqpAsync(['sqlite', '--db', join(mountPoint, 'full.db')], { bin: 'sink', cwd: dir, input: demo.stdout });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(join(mountPoint, 'full.db'));
    expect(result.stderr).toMatch(/full/);
  }, 60_000);
});
