import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { CqpError } from '../../src/core/errors.js';
import { compileFallbackPath, compilePath, getPath } from '../../src/core/paths.js';
import { didYouMean, suggestion } from '../../src/core/suggest.js';
import { loadViewsFile, parseViews } from '../../src/views/definition.js';
import { lineOf, parseYaml } from '../../src/views/yaml-location.js';

const dir = mkdtempSync(join(tmpdir(), 'cqp-views-def-'));

function errorOf(text: string, name = 'views.yaml'): CqpError {
  const file = join(dir, name);
  writeFileSync(file, text);
  try {
    loadViewsFile(file);
  } catch (error) {
    expect(error).toBeInstanceOf(CqpError);
    expect((error as CqpError).code).toBe('CONFIG');
    return error as CqpError;
  }
  throw new Error('expected the views file to be rejected');
}

const GOOD = `views:
  - table: ice_creams
    columns:
      name: payload.name
    on:
      create.ice_cream: upsert
`;

describe('views file errors name the file, the line and the field', () => {
  const cases: Array<{ name: string; text: string; expected: string }> = [
    {
      name: 'unknown action, with the nearest one suggested',
      text: GOOD.replace('create.ice_cream: upsert', 'create: upsrt'),
      expected: 'views.yaml:6: field views[0].on.create: unknown action "upsrt" — did you mean "upsert"?',
    },
    {
      name: 'unknown column type',
      text: GOOD.replace('name: payload.name', 'sold: { path: payload.qty, type: intger }'),
      expected: 'views.yaml:4: field views[0].columns.sold.type: unknown column type "intger" — did you mean "integer"?',
    },
    {
      name: 'unknown field of a view',
      text: GOOD.replace('    columns:', '    colums:'),
      expected: 'views.yaml:3: field views[0].colums: unknown field "colums" — did you mean "columns"?',
    },
    {
      name: 'an action word in the wrong shape',
      text: GOOD.replace('create.ice_cream: upsert', 'sale: { incremnt: { sold: payload.qty } }'),
      expected: 'views.yaml:6: field views[0].on.sale: unknown action "incremnt" — did you mean "increment"?',
    },
    {
      name: 'a table name that is not an SQL identifier',
      text: GOOD.replace('table: ice_creams', 'table: ice-creams'),
      expected: 'views.yaml:2: field views[0].table: table name "ice-creams" is not an SQL identifier',
    },
    {
      name: 'a column name that is not an SQL identifier',
      text: GOOD.replace('name: payload.name', '"full name": payload.name'),
      expected: 'views.yaml:4: field views[0].columns["full name"]: column name "full name" is not an SQL identifier',
    },
    {
      name: 'a bad dot path',
      text: GOOD.replace('payload.name', 'payload..name'),
      expected: 'views.yaml:4: field views[0].columns.name: "payload..name" is not a dot path',
    },
    {
      name: 'increment of a column not declared',
      text: GOOD.replace('create.ice_cream: upsert', 'sale.ice_cream: { increment: { nme: payload.qty } }'),
      expected: 'views.yaml:6: field views[0].on["sale.ice_cream"].increment.nme: increment of unknown column "nme" — did you mean "name"?',
    },
    {
      name: 'increment of an untyped column',
      text: GOOD.replace('create.ice_cream: upsert', 'sale.ice_cream: { increment: { name: payload.qty } }'),
      expected: 'field views[0].on["sale.ice_cream"].increment.name: column "name" is incremented, so declare it with type integer or real',
    },
    {
      name: 'a column named like the key column',
      text: GOOD.replace('name: payload.name', 'id: payload.productId'),
      expected: 'views.yaml:4: field views[0].columns.id: column "id" is also the key column',
    },
    {
      name: 'two views on one table',
      text: `${GOOD}  - table: ice_creams\n    columns: { a: b }\n    on: { x: upsert }\n`,
      expected: 'views.yaml:7: field views[1].table: table "ice_creams" is already the table of views[0]',
    },
    {
      name: 'a view with neither on nor handler',
      text: 'views:\n  - table: t\n    columns: { a: b }\n',
      expected: 'views.yaml:2: field views[0]: a view needs on:',
    },
    {
      name: 'a missing handler module',
      text: 'views:\n  - table: t\n    handler: ./nope.mjs\n',
      expected: `views.yaml:3: field views[0].handler: handler module ${join(dir, 'nope.mjs')} not found`,
    },
    {
      name: 'a handler view with columns',
      text: 'views:\n  - table: t\n    handler: ./views.yaml\n    columns: { a: b }\n',
      expected: 'views.yaml:4: field views[0].columns: a view with a handler module takes no columns',
    },
    {
      name: 'no views',
      text: 'views: []\n',
      expected: 'views.yaml:1: field views: a views file needs at least one view',
    },
    {
      name: 'not YAML',
      text: 'views:\n  - table: [unclosed\n',
      expected: 'the views file is not valid YAML',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      expect(errorOf(c.text).message).toContain(`${c.expected}`);
    });
  }

  test('every problem is reported, in line order, each on its own line', () => {
    const message = errorOf(
      GOOD.replace('name: payload.name', 'sold: { path: payload.qty, type: intger }').replace('create.ice_cream: upsert', 'create: upsrt'),
    ).message;
    const lines = message.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/views\.yaml:4: .*intger/);
    expect(lines[1]).toMatch(/views\.yaml:6: .*upsrt/);
  });

  test('a missing file is a configuration error naming it', () => {
    expect(() => loadViewsFile(join(dir, 'absent.yaml'))).toThrow(/cannot read views file .*absent\.yaml/);
  });
});

describe('a valid views file', () => {
  test('gives defaults for key, key column and type', () => {
    const [view] = parseViews(GOOD, join(dir, 'v.yaml'));
    expect(view).toMatchObject({
      kind: 'columns',
      table: 'ice_creams',
      key: { column: 'id', paths: ['header.rel.id', 'id'], type: 'text' },
      typePaths: ['header.eventName.0', 'type'],
      columns: [{ name: 'name', path: 'payload.name' }],
      on: { 'create.ice_cream': { kind: 'upsert' } },
    });
  });

  test('resolves a handler module against the views file folder', () => {
    writeFileSync(join(dir, 'h.mjs'), 'export default { handle() {} };\n');
    const [view] = parseViews('views:\n  - table: stats\n    handler: ./h.mjs\n', join(dir, 'v.yaml'));
    expect(view).toEqual({ kind: 'handler', table: 'stats', handler: join(dir, 'h.mjs') });
  });

  test('the example views file for the demo events loads', () => {
    const views = loadViewsFile(join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml'));
    expect(views.map((v) => v.table)).toEqual(['ice_creams', 'sales', 'flavor_counts']);
  });
});

describe('lineOf', () => {
  const doc = parseYaml('a:\n  b:\n    - x\n    - y: 1\n      z: 2\n  c: 3\n');
  const cases: Array<[Array<string | number>, number]> = [
    [['a'], 1],
    [['a', 'b'], 2],
    [['a', 'b', 0], 3],
    [['a', 'b', 1], 4],
    [['a', 'b', 1, 'z'], 5],
    [['a', 'c'], 6],
    [['a', 'missing', 'deeper'], 1],
  ];
  for (const [path, line] of cases) test(`${path.join('.')} is on line ${line}`, () => expect(lineOf(doc, path)).toBe(line));
});

describe('dot paths', () => {
  const event = { header: { eventName: ['create.ice_cream'], rel: { id: 'r1' } }, payload: { flavors: [{ n: 'mint' }], length: 3, '0': 'zero' }, id: 7 };
  const cases: Array<[string, unknown]> = [
    ['header.rel.id', 'r1'],
    ['header.eventName.0', 'create.ice_cream'],
    ['header.eventName.1', undefined],
    ['payload.flavors.0.n', 'mint'],
    ['payload.length', 3],
    ['payload.0', 'zero'],
    ['header.eventName.length', undefined],
    ['payload.toString', undefined],
    ['payload.constructor', undefined],
    ['header.rel.id.more', undefined],
    ['nothing.here', undefined],
  ];
  for (const [path, value] of cases) {
    test(`${path} → ${JSON.stringify(value)}`, () => {
      expect(getPath(event, path)).toEqual(value);
      expect(compilePath(path)(event)).toEqual(value);
    });
  }
  test('fallback paths take the first one present', () => {
    expect(compileFallbackPath(['header.rel.id', 'id'])(event)).toBe('r1');
    expect(compileFallbackPath(['header.nope', 'id'])(event)).toBe(7);
  });
  test('an empty segment is refused', () => expect(() => compilePath('a..b')).toThrow(/not a dot path/));
});

describe('did you mean', () => {
  test('suggests the nearest word when it is near', () => {
    expect(didYouMean('upsrt', ['upsert', 'insert', 'delete'])).toBe('upsert');
    expect(didYouMean('DELTE', ['upsert', 'insert', 'delete'])).toBe('delete');
    expect(didYouMean('enrih', ['enrich', 'where'])).toBe('enrich');
    expect(suggestion('colums', ['columns'])).toBe(' — did you mean "columns"?');
  });
  test('stays quiet when nothing is near', () => {
    expect(didYouMean('zebra', ['upsert', 'insert', 'delete'])).toBeUndefined();
    expect(suggestion('zebra', ['upsert'])).toBe('');
  });
});
