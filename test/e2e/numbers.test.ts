import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseLines, cqpAsync } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-numbers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Number texts a double cannot carry (or JSON.stringify would write otherwise), and safe ones beside them. */
const UNSAFE = ['9007199254740993', '12345678901234567890', '-12345678901234567890', '1e400', '-1e400', '1e-400', '-0', '-0.0', '0.1000000000000000055511151231257827', '123456789.123456789'];
/** Numbers a double carries: written as JSON.stringify writes them (the same value). */
const SAFE: Array<[string, string]> = [['0', '0'], ['42', '42'], ['-7', '-7'], ['3.14', '3.14'], ['9007199254740991', '9007199254740991'], ['1E2', '100'], ['2.5e-3', '0.0025'], ['1.50', '1.5'], ['-0.5', '-0.5']];
const CASES: Array<[string, string]> = [...UNSAFE.map((n): [string, string] => [n, n]), ...SAFE];

describe('numbers go through re-serialising filters unchanged', () => {
  const filters: Array<[string, string[], string]> = [
    ['map with an assignment', ['map', 'e.x = 1'], ',"x":1'],
    ['map returning e', ['map', 'e'], ''],
    ['enrich --set', ['enrich', '--set', 'x=1'], ',"x":1'],
  ];
  it.each(filters)('%s keeps the value of every number', async (_name, args, added) => {
    const input = CASES.map(([n]) => `{"header":{"eventId":"a","detectionTimestamp":"t"},"n":${n},"list":[${n}, {"m": ${n}}]}`).join('\n');
    const r = await cqpAsync(args, { bin: 'filter', input: `${input}\n` });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    CASES.forEach(([, n], i) => {
      expect(lines[i]).toBe(`{"header":{"eventId":"a","detectionTimestamp":"t"},"n":${n},"list":[${n},{"m":${n}}]${added}}`);
    });
  });

  it('enrich --set keeps the exact text of the value it adds', async () => {
    const r = await cqpAsync(['enrich', '--set', 'big=12345678901234567890', '--set', 'neg=-0'], { bin: 'filter', input: '{"header":{"eventId":"a","detectionTimestamp":"t"}}\n' });
    expect(r.stdout).toBe('{"header":{"eventId":"a","detectionTimestamp":"t"},"big":12345678901234567890,"neg":-0}\n');
  });

  it('user expressions see safe numbers as numbers and unsafe ones as a class with Number() and String()', async () => {
    const input = '{"a":1.5,"b":9007199254740993}\n';
    const r = await cqpAsync(['map', 'e.ta = typeof e.a, e.s = String(e.b), e.n = Number(e.b) > 9007199254740990, e.sum = e.b + 1 > 0'], { bin: 'filter', input });
    expect(r.stdout).toBe('{"a":1.5,"b":9007199254740993,"ta":"number","s":"9007199254740993","n":true,"sum":true}\n');
  });

  it('a copied unsafe number keeps its text too', async () => {
    const r = await cqpAsync(['map', '({id: e.b, both: [e.b, e.b]})'], { bin: 'filter', input: '{"b":12345678901234567890}\n' });
    expect(r.stdout).toBe('{"id":12345678901234567890,"both":[12345678901234567890,12345678901234567890]}\n');
  });

  it('a NaN or Infinity an expression computes is written as null, as JSON.stringify does', async () => {
    const r = await cqpAsync(['map', 'e.x = 1/0, e.y = e.missing * 2, e.p = {q: [1, -1/0]}'], { bin: 'filter', input: '{"id":1}\n' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('{"id":1,"x":null,"y":null,"p":{"q":[1,null]}}\n');
  });
});

describe('the sqlite sink stores numbers exactly or rejects them', () => {
  const views = join(dir, 'views.yaml');
  writeFileSync(
    views,
    [
      'views:',
      '  - table: t',
      '    key: { column: id, path: id, type: text }',
      '    type: kind',
      '    columns:',
      '      any: n',
      '      int: { path: i, type: integer }',
      '      dbl: { path: r, type: real }',
      '      txt: { path: s, type: text }',
      '      js: { path: j, type: json }',
      '    on:',
      '      put: upsert',
      '',
    ].join('\n'),
  );

  it('integers beyond 2^53 are stored and printed exactly; other unsafe numbers keep their text or are rejected', async () => {
    const db = join(dir, 'v.db');
    const events = [
      '{"kind":"put","id":"a","n":9007199254740993,"i":9223372036854775807,"s":9007199254740993,"j":{"x":12345678901234567890}}',
      '{"kind":"put","id":"b","n":12345678901234567890,"i":-9007199254740993,"r":1.5}',
      '{"kind":"put","id":"c","n":1e400,"s":-0}',
      '{"kind":"put","id":"d","n":-0}',
      '{"kind":"put","id":"e","i":12345678901234567890}',
      '{"kind":"put","id":"f","r":9007199254740993}',
      '{"kind":"put","id":"g","r":1e400}',
      '{"kind":"put","id":"h","n":42,"r":0.5,"i":7}',
    ];
    const sink = await cqpAsync(['sqlite', '--db', db, '--views', views, '--on-error', 'skip'], { bin: 'sink', input: `${events.join('\n')}\n` });
    expect(sink.status).toBe(0);
    expect(sink.stderr).toContain('stdin:5: view t: column int (i): 12345678901234567890 is not an integer SQLite can hold exactly');
    expect(sink.stderr).toContain('stdin:6: view t: column dbl (r): 9007199254740993 cannot be stored exactly as a real');
    expect(sink.stderr).toContain('stdin:7: view t: column dbl (r): 1e400 cannot be stored exactly as a real');
    const q = await cqpAsync(['query', db, 'SELECT id, any, typeof(any) AS ta, int, dbl, txt, js FROM t ORDER BY id', '--json']);
    expect(q.stderr).toBe('');
    expect(q.stdout.trimEnd().split('\n')).toEqual([
      '{"id":"a","any":9007199254740993,"ta":"integer","int":9223372036854775807,"dbl":null,"txt":"9007199254740993","js":"{\\"x\\":12345678901234567890}"}',
      '{"id":"b","any":"12345678901234567890","ta":"text","int":-9007199254740993,"dbl":1.5,"txt":null,"js":null}',
      '{"id":"c","any":"1e400","ta":"text","int":null,"dbl":null,"txt":"-0","js":null}',
      '{"id":"d","any":"-0","ta":"text","int":null,"dbl":null,"txt":null,"js":null}',
      '{"id":"h","any":42,"ta":"integer","int":7,"dbl":0.5,"txt":null,"js":null}',
    ]);
    const table = await cqpAsync(['query', db, "SELECT int FROM t WHERE id IN ('a', 'b') ORDER BY id"]);
    expect(table.stdout).toContain('9223372036854775807');
    expect(table.stdout).toContain('-9007199254740993');
    expect(parseLines(q.stdout)).toHaveLength(5);

    // The same events read from a command log, whose reader thread scans them for numbers and nesting
    // (an unbounded read runs on that thread): the same rows, the same rejections, named by seq.
    const log = join(dir, 'numbers.log');
    const logged = await cqpAsync(['log', '--path', log], { bin: 'sink', input: `${events.join('\n')}\n` });
    expect(logged.status, logged.stderr).toBe(0);
    const fromLog = join(dir, 'from-log.db');
    const read = await cqpAsync(['sqlite', '--db', fromLog, '--views', views, '--on-error', 'skip', '--read-log', log], { bin: 'sink' });
    expect(read.status, read.stderr).toBe(0);
    expect(read.stderr).toContain(`${log} seq:5: view t: column int (i): 12345678901234567890 is not an integer SQLite can hold exactly`);
    expect(read.stderr).toContain(`${log} seq:7: view t: column dbl (r): 1e400 cannot be stored exactly as a real`);
    const again = await cqpAsync(['query', fromLog, 'SELECT id, any, typeof(any) AS ta, int, dbl, txt, js FROM t ORDER BY id', '--json']);
    expect(again.stdout).toBe(q.stdout);
  });
});
