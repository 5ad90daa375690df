// `cqp replay` without stages into one sink whose definition lets it run inside the replay's process
// (sqlite): the sink runs there, with every guarantee of a sink process (its views, the blue/green
// rename, a kill -9 that leaves the old views, its errors with their locations).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, cqpAsync, shellCommand, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { processesIn } from '../helpers/processes.js';
import { appliedIn } from '../helpers/views.js';
import { execSync } from 'node:child_process';

const VIEWS = `views:
  - table: ice_creams
    key: header.rel.id
    columns:
      name: payload.name
      price: { path: payload.price, type: real }
    on:
      create.ice_cream: upsert
      update.ice_cream: upsert
      delete.ice_cream: delete
`;

let dir: string;
let log: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cqp-replay-here-'));
  log = join(dir, 'e.log');
  execSync(`${shellCommand('source', 'demo --count 30000 --seed 3')} | tee events.ndjson | ${shellCommand('sink', 'log --path e.log')}`, { cwd: dir });
  writeFileSync(join(dir, 'views.yaml'), VIEWS);
  writeFileSync(join(dir, 'pipeline.yaml'), 'name: here\nsource: { type: stdin }\nsinks:\n  - { name: views, type: sqlite, db: out/views.db, views: views.yaml }\n');
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function rows(db: string): unknown[] {
  const conn = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return conn.prepare('SELECT id, name, price FROM ice_creams ORDER BY id').all();
  } finally {
    conn.close();
  }
}

const replay = (args: string[]) => cqpAsync(['replay', '--log', log, '--pipeline', join(dir, 'pipeline.yaml'), ...args], { cwd: dir });

describe('cqp replay runs a lone in-process sink itself', () => {
  it('builds the same views as the sink fed the events, up to --until, and replaces the target', async () => {
    const fed = await cqpAsync(['sqlite', '--db', join(dir, 'fed.db'), '--views', join(dir, 'views.yaml')], { bin: 'sink', cwd: dir, input: readFileSync(join(dir, 'events.ndjson'), 'utf8').split('\n').slice(0, 20_000).join('\n') });
    expect(fed.status, fed.stderr).toBe(0);
    const r = await replay(['--until', '20000']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('20,000 events read');
    expect(r.stderr).toContain('views (sqlite): 20,000 events written, at seq 20000 of 20000,');
    expect(rows(join(dir, 'out/views.db'))).toEqual(rows(join(dir, 'fed.db')));
    expect(readdirSync(join(dir, 'out'))).toEqual(['views.db']);
  });

  it('starts no other process; a kill -9 leaves the old views byte-identical', async () => {
    const db = join(dir, 'out/views.db');
    const before = readFileSync(db);
    const child = spawnCli('cqp', ['replay', '--log', log, '--pipeline', join(dir, 'pipeline.yaml')], { cwd: dir });
    const done = collect(child);
    const temp = `${db}.replay-${child.pid}`;
    await eventually(() => appliedIn(temp) >= 2000, { timeoutMs: 30_000, everyMs: 20, what: 'the replay to write its new database' });
    expect(processesIn(dir)).toEqual([child.pid]);
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    expect(readFileSync(db).equals(before)).toBe(true);
    const next = await replay([]);
    expect(next.status, next.stderr).toBe(0);
    expect(next.stderr).toContain('left by an interrupted replay');
    expect(next.stderr).toContain('30,000 events read');
    expect(readdirSync(join(dir, 'out'))).toEqual(['views.db']);
  });

  it('a views file it refuses: its error with the file and line, exit 2, and the target unchanged', async () => {
    const db = join(dir, 'out/views.db');
    const before = readFileSync(db);
    writeFileSync(join(dir, 'views.yaml'), VIEWS.replace('      create.ice_cream: upsert', '      create.ice_cream: upsertt'));
    try {
      const r = await replay(['--until', '100']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/\[views\] cqp: .*views\.yaml:\d+/);
      expect(r.stderr).toContain('upsertt');
      expect(r.stderr).toMatch(/failed; .*views\.db unchanged/);
      expect(readFileSync(db).equals(before)).toBe(true);
      expect(readdirSync(join(dir, 'out'))).toEqual(['views.db']);
    } finally {
      writeFileSync(join(dir, 'views.yaml'), VIEWS);
    }
  });
});
