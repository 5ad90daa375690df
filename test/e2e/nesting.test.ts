import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openLogWriter } from '../../src/log/writer.js';
import { parseLines, cqpAsync, type CliResult } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-nesting-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const LIMIT = 512;
/** An event whose field `a` is `depth - 1` nested arrays (the object itself is one level). */
const nested = (depth: number): string => `{"a":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}`;
const deep = nested(5000);
const good = (id: number): string => `{"id":${id}}`;
const stream = `${good(1)}\n${deep}\n${good(3)}\n`;

const schema = join(dir, 'object.json');
writeFileSync(schema, '{"type":"object"}');

interface Case {
  name: string;
  bin: 'filter' | 'sink';
  args: (n: string) => string[];
  /** The ids of the events that came out or were stored. */
  stored: (r: CliResult, n: string) => Promise<number[]>;
}

const fromStdout = (r: CliResult): Promise<number[]> => Promise.resolve(parseLines(r.stdout).map((e) => e.id as number));

const cases: Case[] = [
  { name: 'map', bin: 'filter', args: () => ['map', 'e.ok = 1'], stored: fromStdout },
  { name: 'enrich', bin: 'filter', args: () => ['enrich'], stored: fromStdout },
  { name: 'where', bin: 'filter', args: () => ['where', 'true'], stored: fromStdout },
  { name: 'validate', bin: 'filter', args: () => ['validate', '--schema', schema], stored: fromStdout },
  { name: 'dedupe', bin: 'filter', args: () => ['dedupe'], stored: fromStdout },
  {
    name: 'the log sink',
    bin: 'sink',
    args: (n) => ['log', '--path', join(dir, `${n}.log`)],
    stored: async (_r, n) => parseLines((await cqpAsync(['log', 'cat', join(dir, `${n}.log`)])).stdout).map((e) => e.id as number),
  },
  {
    name: 'the sqlite sink',
    bin: 'sink',
    args: (n) => ['sqlite', '--db', join(dir, `${n}.db`)],
    stored: async (_r, n) =>
      parseLines((await cqpAsync(['query', join(dir, `${n}.db`), 'SELECT body FROM events ORDER BY seq', '--json'])).stdout).map(
        (row) => (JSON.parse(row.body as string) as { id: number }).id,
      ),
  },
];

describe('an event nested deeper than the limit is a bad line everywhere', () => {
  it.each(cases)('$name, --on-error skip: the good events go on, the deep one is reported with its line', async (c) => {
    const n = `${c.bin}-${c.name.replace(/\W/g, '')}-skip`;
    const r = await cqpAsync([...c.args(n), '--on-error', 'skip'], { bin: c.bin, input: stream, cwd: dir });
    expect(r.stderr).toContain(`stdin:2: nesting deeper than ${LIMIT} levels`);
    expect(r.status).toBe(0);
    expect(await c.stored(r, n)).toEqual([1, 3]);
  });

  it.each(cases)('$name, --on-error fail: exit 1 with stdin:2', async (c) => {
    const n = `${c.bin}-${c.name.replace(/\W/g, '')}-fail`;
    const r = await cqpAsync([...c.args(n), '--on-error', 'fail'], { bin: c.bin, input: stream, cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^stdin:2: nesting deeper than 512 levels/);
  });

  it('the limit itself passes, one more level does not; brackets inside strings do not count', async () => {
    const brackets = `{"s":"${'[\\"'.repeat(2000)}","t":"\\\\"}`;
    const input = `${nested(LIMIT)}\n${nested(LIMIT + 1)}\n${brackets}\n`;
    const r = await cqpAsync(['map', 'e.ok = 1', '--on-error', 'skip'], { bin: 'filter', input });
    expect(r.stderr).toContain(`stdin:2: nesting deeper than ${LIMIT} levels`);
    expect(r.stderr).not.toContain('stdin:1:');
    expect(r.stderr).not.toContain('stdin:3:');
    expect(parseLines(r.stdout).map((e) => e.ok)).toEqual([1, 1]);
  });

  it('a stack overflow while serialising what a user expression built fails that event only', async () => {
    const input = `${good(1)}\n{"id":2,"deep":true}\n${good(3)}\n`;
    const r = await cqpAsync(['map', 'e.x = e.deep ? Array.from({length: 200000}).reduce((a) => [a], []) : 0', '--on-error', 'skip'], { bin: 'filter', input });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('stdin:2: map:');
    expect(parseLines(r.stdout).map((e) => e.id)).toEqual([1, 3]);
  });

  it('a deep event already in a log (written before the limit) is a bad event for a sink reading it', async () => {
    const log = join(dir, 'old.log');
    const w = await openLogWriter(log, { fsync: 'never', warn: () => undefined });
    await w.appendBatch([good(1), deep, good(3)].map((bytes) => ({ bytes })));
    await w.close();
    const db = join(dir, 'from-log.db');
    const r = await cqpAsync(['sqlite', '--db', db, '--read-log', log, '--on-error', 'skip'], { bin: 'sink' });
    expect(r.stderr).toContain(`${log} seq:2: nesting deeper than ${LIMIT} levels`);
    expect(r.status).toBe(0);
    const rows = parseLines((await cqpAsync(['query', db, 'SELECT body FROM events ORDER BY seq', '--json'])).stdout);
    expect(rows.map((row) => (JSON.parse(row.body as string) as { id: number }).id)).toEqual([1, 3]);
  });
});
