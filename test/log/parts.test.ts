import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { cqp } from '../helpers/cli.js';
import { tempDir } from './helpers.js';

// Positions kept per part of a source (partitions a group's workers read, `log:<id>/p<k>`) meet the
// same source read whole: the sqlite and log sinks place what they can and refuse the rest, never
// applying an event twice. Their input is stamped by hand, as a moved store would meet it.
const line = (n: number, source: string): string => JSON.stringify({ type: 'tick', id: `k${n % 4}`, n, one: 1, '@cqp': `${source}:${n}` });
const VIEWS = `views:
  - table: totals
    key: { column: id, path: id }
    columns:
      count: { type: integer }
    on:
      tick: { increment: { count: one } }
`;

/** Events 1..10 as a group's workers read them: odd ones in partition 0, even ones in partition 1. */
const parts = Array.from({ length: 10 }, (_, i) => line(i + 1, `log:abc/p${(i + 1) % 2}`)).join('\n');
const whole = (from: number, to: number): string => Array.from({ length: to - from + 1 }, (_, i) => line(from + i, 'log:abc')).join('\n');

describe('a sink keeping positions per part of a source, fed the whole source', () => {
  test.each([
    ['sqlite', ['--db', 'views.db', '--views', 'views.yaml']],
    ['log', ['--path', 'out.log']],
  ])('%s: the events past every part are applied, those a part may hold are refused naming the sink and what to do', (name, args) => {
    const dir = tempDir();
    writeFileSync(join(dir, 'views.yaml'), VIEWS);
    const sink = (input: string) => cqp([name, ...args], { bin: 'sink', cwd: dir, input: `${input}\n` });
    expect(sink(parts).status).toBe(0);
    const refused = sink(whole(8, 12));
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(new RegExp(`${name} sink, reading its input: log:abc read whole, but the positions kept are per part of it \\(log:abc/p[01] up to \\d+.*\`group: NAME\`.*\`cqp replay\``, 's'));
    const past = sink(whole(11, 12));
    expect(past.status, past.stderr).toBe(0);
    if (name === 'sqlite') {
      const db = new Database(join(dir, 'views.db'), { readonly: true });
      const total = (db.prepare('SELECT sum(count) AS c FROM totals').get() as { c: number }).c;
      db.close();
      expect(total).toBe(12);
    } else {
      const read = cqp(['log', '--path', 'out.log'], { bin: 'source', cwd: dir });
      expect(read.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as { n: number }).n)).toEqual([...Array(12).keys()].map((i) => i + 1));
    }
  });
});
