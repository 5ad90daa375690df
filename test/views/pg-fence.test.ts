/**
 * The fence of a group's postgres sink, driven through `cqp-sink postgres --group` on the real server
 * with events stamped by hand as a partition's readers stamp them: a batch of a partition another
 * worker committed since is refused when it starts before the stored position (a reader that lost the
 * partition goes on from before it), and taken when it starts at it or past it (a reader that took the
 * partition over, the stored event dropped by a stage).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { collect, cqpAsync, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { service, uniqueName } from '../helpers/services.js';
import { tempDir } from '../log/helpers.js';

const up = await service('postgres');
const PG = 'postgres://postgres@127.0.0.1:5432/test';
const SOURCE = 'log:f00d/p0';
const VIEWS = `views:
  - table: totals
    key: { column: id, path: id }
    columns:
      count: { type: integer }
      sum: { type: integer }
    on:
      tick: { increment: { count: one, sum: n } }
`;

const events = (ns: number[]): string => ns.map((n) => `${JSON.stringify({ type: 'tick', id: 'k', n, one: 1, '@cqp': `${SOURCE}:${n}` })}\n`).join('');
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe.skipIf(!up)('the fence of a group writing one schema', () => {
  const dir = tempDir();
  const schema = uniqueName('cqp_fence');
  let db: pg.Client;
  beforeAll(async () => {
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    db = new pg.Client({ connectionString: PG });
    await db.connect();
  });
  afterAll(async () => {
    await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await db.end();
  });

  const args = ['postgres', '--url', PG, '--schema', schema, '--views', 'views.yaml', '--group', 'g'];
  const stored = async (): Promise<number | undefined> => {
    const r = await db.query<{ n: string }>(`SELECT n FROM "${schema}".cqp_positions WHERE view = 'totals' AND source = $1`, [SOURCE]).catch(() => undefined);
    return r?.rows[0] === undefined ? undefined : Number(r.rows[0].n);
  };
  const totals = async (): Promise<string> => {
    const r = await db.query<{ count: string; sum: string }>(`SELECT count, sum FROM "${schema}".totals WHERE id = 'k'`);
    return `${r.rows[0]?.count} ${r.rows[0]?.sum}`;
  };
  const sum = (ns: number[]): string => `${ns.length} ${ns.reduce((a, b) => a + b, 0)}`;
  /** Another worker of the group committing `ns`, start to end. */
  const other = async (ns: number[]): Promise<void> => {
    const r = await cqpAsync(args, { bin: 'sink', cwd: dir, input: events(ns) });
    expect(r.status, r.stderr).toBe(0);
  };

  test('a batch past the stored position is taken; one before it, from a reader that lost the partition, is rolled back and reported', async () => {
    // This worker's sink runs throughout; it saw the partition at 5.
    const mine = spawnCli('sink', args, { cwd: dir });
    const done = collect(mine);
    mine.stdin?.write(events(range(1, 5)));
    await eventually(async () => ((await stored()) === 5 ? true : undefined), { what: 'the first batch committed at 5' });
    // Another worker held the partition meanwhile and committed up to 20.
    await other(range(6, 20));
    // This worker took it back at 20; a stage dropped 20 and the events up to 24: its batch starts at 25.
    mine.stdin?.write(events(range(25, 30)));
    await eventually(async () => ((await stored()) === 30 ? true : undefined), { what: 'the batch from 25 committed' });
    expect(await totals()).toBe(sum([...range(1, 20), ...range(25, 30)]));
    // Another worker again, up to 40; this one goes on from 31, where it stood: fenced.
    await other(range(31, 40));
    mine.stdin?.write(events(range(31, 45)));
    mine.stdin?.end();
    const r = await done;
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/fenced: another worker of group g has committed log:f00d\/p0 up to 40 since this one saw 30 of it .*the batch from 31 was rolled back, nothing of it applied/);
    expect(await stored()).toBe(40);
    expect(await totals()).toBe(sum([...range(1, 20), ...range(25, 40)]));
  }, 60_000);
});
