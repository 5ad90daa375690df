import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseLines, cqpAsync } from '../helpers/cli.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'cqp-filters-'));
const envelope = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  header: { eventId: id, eventType: ['create'], eventName: ['create.ice_cream'], createdTimestamp: '2022-05-30T08:49:46.745Z', rel: { id: 'r1', schemaVersion: '/s/1' } },
  payload: { name: 'Vanilla', price: 2 },
  ...extra,
});
const ndjson = (events: unknown[]): string => events.map((e) => `${JSON.stringify(e)}\n`).join('');

describe('enrich', () => {
  it('adds eventId and detectionTimestamp when missing, never overwrites', async () => {
    const r = await cqpAsync(['enrich'], { bin: 'filter', input: ndjson([{ payload: {} }, envelope('events/keep', { header: { eventId: 'x', detectionTimestamp: 'then' } })]) });
    expect(r.status).toBe(0);
    const [a, b] = parseLines(r.stdout) as Array<{ header: Record<string, string> }>;
    expect(a?.header.eventId).toMatch(/^events\/[0-9a-f-]{36}$/);
    expect(Date.parse(a?.header.detectionTimestamp ?? '')).not.toBeNaN();
    expect(b?.header).toEqual({ eventId: 'x', detectionTimestamp: 'then' });
  });

  it('is a no-op on enriched events: the original bytes go through', async () => {
    const line = '{"header": {"eventId": "e1",  "detectionTimestamp": "t"}, "z": 1}\n';
    const r = await cqpAsync(['enrich'], { bin: 'filter', input: line });
    expect(r.stdout).toBe(line);
  });

  it('--set adds missing fields, JSON values parsed', async () => {
    const r = await cqpAsync(['enrich', '--set', 'payload.source=shop', '--set', 'payload.n=3', '--set', 'payload.name=no'], { bin: 'filter', input: ndjson([{ payload: { name: 'yes' } }]) });
    expect(parseLines(r.stdout)[0]?.payload).toEqual({ name: 'yes', source: 'shop', n: 3 });
  });
});

describe('validate', () => {
  it('checks the built-in envelope and names what is wrong', async () => {
    const bad = envelope('e2');
    (bad.header as Record<string, unknown>).eventType = 'create';
    const r = await cqpAsync(['validate', '--on-error', 'skip'], { bin: 'filter', input: ndjson([envelope('e1'), bad, { payload: {} }]) });
    expect(r.status).toBe(0);
    expect(parseLines(r.stdout)).toHaveLength(1);
    expect(r.stderr).toContain('stdin:2: validate: invalid: /header/eventType must be array');
    expect(r.stderr).toContain("stdin:3: validate: invalid: must have required property 'header'");
  });

  it('uses a JSON Schema file', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 's.json'), JSON.stringify({ type: 'object', required: ['qty'], properties: { qty: { type: 'integer', minimum: 1 } } }));
    const r = await cqpAsync(['validate', '--schema', 's.json'], { bin: 'filter', input: '{"qty":2}\n{"qty":0}\n', cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('{"qty":2}\n');
    expect(r.stderr).toContain('stdin:2: validate: invalid: /qty must be >= 1');
  });

  it('a missing schema file is a configuration error', async () => {
    const r = await cqpAsync(['validate', '--schema', '/nonexistent/s.json'], { bin: 'filter', input: '' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--schema /nonexistent/s.json: cannot read it');
  });
});

describe('where and map', () => {
  it('where forwards kept events byte for byte', async () => {
    const input = '{"p": 3,  "k":"a"}\n{"p":1}\n{"p" : 5}\n';
    const r = await cqpAsync(['where', 'e.p > 2'], { bin: 'filter', input });
    expect(r.stdout).toBe('{"p": 3,  "k":"a"}\n{"p" : 5}\n');
  });

  it('map: value form, arrays, null drops, non-objects are errors', async () => {
    const r = await cqpAsync(['map', 'e.n === 1 ? null : e.n === 2 ? [{a: 1}, {a: 2}] : e.n === 3 ? 7 : ({k: e.n})', '--on-error', 'skip'], { bin: 'filter', input: ndjson([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]) });
    expect(parseLines(r.stdout)).toEqual([{ a: 1 }, { a: 2 }, { k: 4 }]);
    expect(r.stderr).toContain('stdin:3: map produced number; expected an object');
  });

  it('a syntax error is a usage error naming the option', async () => {
    const r = await cqpAsync(['map', 'e.a = = 1'], { bin: 'filter', input: '' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--expr: cannot parse expression');
  });

  it('carries position stamps past user code; expansions get sub-positions', async () => {
    const input = '{"a":1,"@cqp":"demo:1:7"}\n';
    const r = await cqpAsync(['map', '[{x: Object.keys(e).length}, {y: 2}]'], { bin: 'filter', input });
    expect(r.stdout).toBe('{"x":1,"@cqp":"demo:1:7.0"}\n{"y":2,"@cqp":"demo:1:7.1"}\n');
  });
});

describe('dedupe', () => {
  it('drops repeats within the window only', async () => {
    const ids = ['a', 'b', 'a', 'c', 'd', 'a'];
    const r = await cqpAsync(['dedupe', '--key', 'id', '--window', '2'], { bin: 'filter', input: ndjson(ids.map((id) => ({ id }))) });
    expect(parseLines(r.stdout).map((e) => e.id)).toEqual(['a', 'b', 'c', 'd', 'a']);
  });

  it('defaults to the event id', async () => {
    const r = await cqpAsync(['dedupe'], { bin: 'filter', input: ndjson([envelope('x'), envelope('x'), envelope('y')]) });
    expect(parseLines(r.stdout)).toHaveLength(2);
  });
});

describe('module', () => {
  it('runs an async JS module; a throw follows the policy', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'm.mjs'), 'export default async (e) => { if (e.bad) throw new Error("no bad ones"); return e.n > 1 ? [e, { copy: e.n }] : { ...e, seen: true }; };\n');
    const r = await cqpAsync(['module', 'm.mjs', '--on-error', 'skip'], { bin: 'filter', input: ndjson([{ n: 1 }, { n: 2 }, { bad: true }]), cwd: dir });
    expect(r.status).toBe(0);
    expect(parseLines(r.stdout)).toEqual([{ n: 1, seen: true }, { n: 2 }, { copy: 2 }]);
    expect(r.stderr).toContain('stdin:3: module: no bad ones');
  });

  it('loads a TypeScript upcaster with a relative import', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'names.ts'), 'export const rename = (s: string): string => s.toUpperCase();\n');
    writeFileSync(join(dir, 'up.ts'), "import { rename } from './names.ts';\ninterface E { name: string; v?: number }\nexport default (e: E): E => ({ ...e, name: rename(e.name), v: 2 });\n");
    const r = await cqpAsync(['module', '--file', 'up.ts'], { bin: 'filter', input: ndjson([{ name: 'a' }]), cwd: dir });
    expect(r.stderr).toBe('');
    expect(parseLines(r.stdout)).toEqual([{ name: 'A', v: 2 }]);
  });

  it('a module without a default function is a configuration error', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'm.mjs'), 'export const x = 1;\n');
    const r = await cqpAsync(['module', 'm.mjs'], { bin: 'filter', input: '', cwd: dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('its default export is undefined');
  });
});

describe('the command line', () => {
  it('cqp list names every component with its summary', async () => {
    const r = await cqpAsync(['list']);
    for (const word of ['enrich', 'validate', 'where', 'map', 'dedupe', 'module', 'demo', 'stdin', 'stdout', 'file']) expect(r.stdout).toContain(word);
  });

  it('--help lists a filter\'s options', async () => {
    const r = await cqpAsync(['dedupe', '--help'], { bin: 'filter' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('--window <value>');
    expect(r.stdout).toContain('--on-error <mode>');
  });

  it('an unknown filter suggests the nearest name, exit 2', async () => {
    const r = await cqpAsync(['enrih'], { bin: 'filter' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown filter "enrih" — did you mean "enrich"?');
  });

  it('the file sink creates the folders of its path', async () => {
    const file = join(tmp(), 'a', 'b', 'out.ndjson');
    const r = await cqpAsync(['file', '--path', file], { bin: 'sink', input: '{"a":1}\n{"a":2,"@cqp":"demo:1:1"}\n' });
    expect(r.status).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe('{"a":1}\n{"a":2}\n');
  });

  it('the demo source is repeatable by seed and about 400 bytes an event', async () => {
    const a = await cqpAsync(['demo', '--count', '50', '--seed', '9'], { bin: 'source' });
    const b = await cqpAsync(['demo', '--count', '50', '--seed', '9'], { bin: 'source' });
    expect(a.stdout).toBe(b.stdout);
    const lines = a.stdout.trim().split('\n');
    expect(lines).toHaveLength(50);
    const avg = a.stdout.length / lines.length;
    expect(avg).toBeGreaterThan(250);
    expect(avg).toBeLessThan(550);
    expect(new Set(parseLines(a.stdout).map((e) => (e.header as { eventName: string[] }).eventName[0]))).toContain('create.ice_cream');
  });
});
