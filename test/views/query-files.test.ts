import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { cqpAsync, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';

// `cqp query` only reads: it leaves no `-wal`/`-shm` files beside a database no writer has open, and it
// still reads what a running writer has committed.

const VIEWS = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');

function demoLines(count: number, from = 0): string {
  return Array.from({ length: count }, (_, i) => JSON.stringify({ header: { eventName: ['sale.ice_cream'], rel: { id: `ic-${from + i}` } }, payload: { productId: `p-${(from + i) % 3}`, qty: 1 } })).join('\n') + '\n';
}

async function count(db: string): Promise<number | undefined> {
  const r = await cqpAsync(['query', db, 'SELECT sum(units) AS n FROM sales', '--json']);
  if (r.status !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { n: number | null }).n ?? undefined;
}

describe('cqp query leaves no files behind', () => {
  test('a database whose writer has ended: the folder holds the same files after the query', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-query-files-'));
    const db = join(dir, 'v.db');
    const sink = await cqpAsync(['sqlite', '--db', db, '--views', VIEWS], { bin: 'sink', input: demoLines(10) });
    expect(sink.status, sink.stderr).toBe(0);
    const before = readdirSync(dir).sort();
    expect(before).not.toContain('v.db-wal');
    expect(await count(db)).toBe(10);
    expect(readdirSync(dir).sort()).toEqual(before);
  });

  test('a database a writer has open: the query sees what it committed, and the writer goes on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-query-files-'));
    const db = join(dir, 'v.db');
    const writer = spawnCli('sink', ['sqlite', '--db', db, '--views', VIEWS]);
    const done = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    writer.stdin?.write(demoLines(5));
    await eventually(async () => (await count(db).catch(() => undefined)) === 5, { what: 'the query to see the first 5 events' });
    writer.stdin?.write(demoLines(7, 5));
    await eventually(async () => (await count(db).catch(() => undefined)) === 12, { what: 'the query to see all 12 events' });
    writer.stdin?.end();
    expect(await done).toBe(0);
    expect(await count(db)).toBe(12);
  }, 60_000);
});
