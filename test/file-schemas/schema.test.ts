import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { ComponentDefinition } from '../../src/core/component.js';
import { componentNames, findComponent, loadNamedComponents } from '../../src/core/registry.js';
import { cqp } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The YAML files of a folder: pipeline tests (`*.test.yaml`) apart from the rest. */
const yamlFiles = (dir: string, tests = false): string[] =>
  readdirSync(join(ROOT, dir))
    .filter((f) => f.endsWith('.yaml') && f.endsWith('.test.yaml') === tests)
    .map((f) => join(dir, f));

/** The schema `cqp schema KIND` prints, compiled by ajv in strict mode (an unknown keyword fails). */
function validator(kind: string): (doc: unknown) => string[] {
  const r = cqp(['schema', kind]);
  expect(r.status, r.stderr).toBe(0);
  const schema = JSON.parse(r.stdout) as { $schema?: string };
  expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  const check = ajv.compile(schema);
  return (doc) => (check(doc) ? [] : (check.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''} ${JSON.stringify(e.params)}`));
}

const pipeline = validator('pipeline');
const views = validator('views');
const tests = validator('test');

describe('cqp schema pipeline', () => {
  it.each(yamlFiles('pipelines'))('holds the shipped %s', (file) => {
    expect(pipeline(parse(readFileSync(join(ROOT, file), 'utf8')))).toEqual([]);
  });

  // The schema is made from each component's own options schema: every example a component declares fits it.
  it('holds every example option set of every built-in component', async () => {
    const placed = (def: ComponentDefinition, options: Record<string, unknown>): Record<string, unknown> => {
      const sink = { name: 'out', type: 'stdout' };
      if (def.kind === 'source') return { source: { type: def.name, ...options }, sinks: [sink] };
      if (def.kind === 'filter') return { source: { type: 'stdin' }, stages: [{ name: 's', filter: def.name, with: options }], sinks: [sink] };
      return { source: { type: 'stdin' }, sinks: [{ name: 'out', type: def.name, ...options }] };
    };
    let examples = 0;
    for (const kind of ['source', 'filter', 'sink'] as const) {
      await loadNamedComponents(kind);
      for (const name of componentNames(kind)) {
        const def = findComponent(kind, name) as ComponentDefinition;
        for (const example of def.examples) {
          examples++;
          expect(pipeline(placed(def, example as Record<string, unknown>)), `${kind} ${name} ${JSON.stringify(example)}`).toEqual([]);
        }
      }
    }
    expect(examples).toBeGreaterThan(10);
  });

  const good = {
    source: { type: 'demo', count: '${COUNT:-5}' },
    stages: [
      { name: 'keep', filter: 'where', with: { expr: 'e.a > 1' }, onError: 'skip' },
      { name: 'score', run: ['node', 'score.mjs'] },
    ],
    sinks: [{ name: 'log', type: 'log', path: 'events.log', fsync: 'always' }],
  };
  const misspelt: Array<[what: string, doc: unknown, at: string]> = [
    ['a top-level field', { ...good, sink: good.sinks }, ''],
    ['a source option', { ...good, source: { type: 'demo', cuont: 5 } }, '/source'],
    ['a stage field', { ...good, stages: [{ name: 'keep', filtre: 'where', with: { expr: 'true' } }] }, '/stages/0'],
    ['a filter option under with:', { ...good, stages: [{ name: 'keep', filter: 'where', with: { exp: 'true' } }] }, '/stages/0'],
    ['a sink option', { ...good, sinks: [{ name: 'log', type: 'log', paht: 'events.log' }] }, '/sinks/0'],
    ['a runtime option', { ...good, sinks: [{ name: 'log', type: 'log', path: 'events.log', onErorr: 'skip' }] }, '/sinks/0'],
    ['a sink type', { ...good, sinks: [{ name: 'log', type: 'logg', path: 'events.log' }] }, '/sinks/0'],
    ['an option value', { ...good, sinks: [{ name: 'log', type: 'log', path: 'events.log', fsync: 'sometimes' }] }, '/sinks/0'],
  ];
  it('holds the file the misspelt ones are made from', () => {
    expect(pipeline(good)).toEqual([]);
  });
  it.each(misspelt)('flags a misspelt %s', (_what, doc, at) => {
    const errors = pipeline(doc);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.some((e) => e.startsWith(`${at} `) || e.startsWith(`${at}/`))).toBe(true);
  });
  // The schema agrees with cqp itself: lint takes the file the misspelt ones come from and refuses each of them.
  it('agrees with cqp lint on every one of them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-schema-'));
    const lint = (doc: unknown): number | null => {
      // JSON is YAML.
      writeFileSync(join(dir, 'p.yaml'), JSON.stringify(doc));
      return cqp(['lint', 'p.yaml'], { cwd: dir }).status;
    };
    expect(lint(good)).toBe(0);
    for (const [what, doc] of misspelt) expect(lint(doc), what).toBe(2);
  });
});

describe('cqp schema views', () => {
  it.each(yamlFiles('pipelines/views'))('holds the shipped %s', (file) => {
    expect(views(parse(readFileSync(join(ROOT, file), 'utf8')))).toEqual([]);
  });

  const good = { views: [{ table: 't', key: { column: 'k', path: 'header.rel.id' }, columns: { name: 'payload.name', n: { path: 'payload.n', type: 'integer' } }, on: { 'create.x': 'upsert' } }] };
  it('holds the file the misspelt ones are made from', () => {
    expect(views(good)).toEqual([]);
  });
  it.each([
    ['a top-level field', { view: good.views }, ''],
    ['a view field', { views: [{ ...good.views[0], colums: {} }] }, '/views/0'],
    ['a key field', { views: [{ ...good.views[0], key: { colum: 'k', path: 'header.rel.id' } }] }, '/views/0/key'],
    ['a column field', { views: [{ ...good.views[0], columns: { n: { paht: 'payload.n' } } }] }, '/views/0/columns/n'],
  ])('flags a misspelt %s', (_what, doc, at) => {
    const errors = views(doc);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.some((e) => e.startsWith(`${at} `) || e.startsWith(`${at}/`))).toBe(true);
  });
});

describe('cqp schema, used wrongly', () => {
  it('names the kinds, with a did-you-mean, for an unknown one (exit 2)', () => {
    const r = cqp(['schema', 'pipline']);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/unknown kind of file "pipline" — did you mean "pipeline"\? \(kinds: pipeline, views/);
  });
  it('explains itself in --help and answers --version', () => {
    const help = cqp(['schema', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/yaml-language-server: \$schema=/);
    expect(help.stdout).toMatch(/pipeline +a pipeline file/);
    expect(help.stdout).not.toMatch(/DESIGN|§/);
    const version = cqp(['schema', '--version']);
    expect(version).toMatchObject({ status: 0, stdout: `${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}\n` });
  });
});

describe('cqp schema test', () => {
  it.each(yamlFiles('pipelines', true))('holds the shipped %s', (file) => {
    expect(tests(parse(readFileSync(join(ROOT, file), 'utf8')))).toEqual([]);
  });

  it('flags a misspelt key', () => {
    const doc = { pipeline: 'ice-creams.yaml', tests: [{ name: 'x', inputs: [{ insert_at: 'enrich', events: [{}] }], output: [] }] };
    expect(tests(doc).join('\n')).toMatch(/additionalProperty.*output/);
  });
});
