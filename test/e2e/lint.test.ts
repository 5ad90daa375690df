import { chmodSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cqp } from '../helpers/cli.js';

// `cqp lint` refuses what `cqp run` would refuse, each problem as FILE:LINE: field: message (exit 2).
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VIEWS = join(ROOT, 'pipelines/views/ice-creams.yaml');

const BAD_VIEWS = `views:
  - table: ice_creams
    key: header.rel.id
    columns:
      name: payload.name
    on:
      create.ice_cream: upsret
`;

interface Case {
  what: string;
  /** Extra files written beside the pipeline, by name. */
  files?: Record<string, string>;
  /** Files made executable. */
  executable?: string[];
  /** The pipeline; `${VIEWS}` is the shipped views file. */
  pipeline: string;
  /** Each problem expected: the pipeline's line, the field, and a pattern for the message (null: passes). */
  problems: Array<[line: number, field: string, message: RegExp]>;
}

const cases: Case[] = [
  {
    what: 'a good pipeline with a schema, a module, a run: program and a views file',
    files: {
      'schema.json': '{"type": "object"}',
      'up.mjs': 'export default (e) => e;\n',
      'tag.sh': '#!/bin/sh\nexec cat\n',
    },
    executable: ['tag.sh'],
    pipeline: `source: { type: demo, count: 10 }
stages:
  - { name: check, filter: validate, with: { schema: schema.json } }
  - { name: up, filter: module, with: { file: up.mjs } }
  - { name: tag, run: ./tag.sh }
  - { name: cat, run: [cat] }
sinks:
  - { name: log, type: log, path: out/events.log }
  - { name: views, type: sqlite, db: out/views.db, views: ${VIEWS} }
`,
    problems: [],
  },
  {
    what: 'a views file with an unknown action',
    files: { 'views.yaml': BAD_VIEWS },
    pipeline: 'source: { type: demo }\nsinks:\n  - { name: log, type: log, path: events.log }\n  - { name: views, type: sqlite, db: v.db, views: views.yaml }\n',
    problems: [[4, 'sinks[1].views', /views\.yaml:7: field views\[0\]\.on\["create\.ice_cream"\]: .*upsret.*did you mean "upsert"/]],
  },
  {
    what: 'a views file that does not exist',
    pipeline: 'source: { type: demo }\nsinks:\n  - { name: views, type: sqlite, db: v.db, views: nowhere.yaml }\n',
    problems: [[3, 'sinks[0].views', /cannot read views file .*nowhere\.yaml/]],
  },
  {
    what: 'a stage expression that does not compile',
    pipeline: 'source: { type: demo }\nstages:\n  - name: cheap\n    filter: where\n    with:\n      expr: "e.payload.price >"\nsinks:\n  - { name: out, type: stdout }\n',
    problems: [[6, 'stages[0].with.expr', /cannot parse expression "e\.payload\.price >"/]],
  },
  {
    what: 'a module file that does not exist',
    pipeline: 'source: { type: demo }\nstages:\n  - { name: up, filter: module, with: { file: missing.mjs } }\nsinks:\n  - { name: out, type: stdout }\n',
    problems: [[3, 'stages[0].with.file', /missing\.mjs: no such file/]],
  },
  {
    what: 'a schema file that does not exist',
    pipeline: 'source: { type: demo }\nstages:\n  - { name: v, filter: validate, with: { schema: missing.json } }\nsinks:\n  - { name: out, type: stdout }\n',
    problems: [[3, 'stages[0].with.schema', /missing\.json: cannot read it/]],
  },
  {
    what: 'a run: program that is not on the PATH',
    pipeline: 'source: { type: demo }\nstages:\n  - { name: score, run: "no-such-program-cqp --fast" }\nsinks:\n  - { name: out, type: stdout }\n',
    problems: [[3, 'stages[0].run', /program "no-such-program-cqp" is not found on the PATH/]],
  },
  {
    what: 'a run: program that is not executable',
    files: { 'score.sh': '#!/bin/sh\nexec cat\n' },
    pipeline: 'source: { type: demo }\nstages:\n  - { name: score, run: [./score.sh] }\nsinks:\n  - { name: out, type: stdout }\n',
    problems: [[3, 'stages[0].run', /score\.sh is not executable/]],
  },
  {
    what: 'every problem at once, in line order',
    files: { 'views.yaml': BAD_VIEWS },
    pipeline: `source: { type: demo }
stages:
  - { name: m, filter: map, with: { expr: "e.x = = 1" } }
  - { name: e, filter: enrih }
  - { name: up, filter: module, with: { file: missing.mjs } }
sinks:
  - { name: views, type: sqlite, db: v.db, views: views.yaml }
`,
    problems: [
      [3, 'stages[0].with.expr', /cannot parse expression/],
      [4, 'stages[1].filter', /unknown filter "enrih"/],
      [5, 'stages[2].with.file', /no such file/],
      [7, 'sinks[0].views', /upsret/],
    ],
  },
];

describe('cqp lint', () => {
  for (const c of cases) {
    it(c.what, () => {
      const dir = mkdtempSync(join(tmpdir(), 'cqp-lint-'));
      for (const [name, text] of Object.entries(c.files ?? {})) writeFileSync(join(dir, name), text);
      for (const name of c.executable ?? []) chmodSync(join(dir, name), 0o755);
      const file = join(dir, 'p.yaml');
      writeFileSync(file, c.pipeline);
      const r = cqp(['lint', file]);
      if (c.problems.length === 0) {
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        return;
      }
      expect(r.status, r.stderr).toBe(2);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines.length, r.stderr).toBe(c.problems.length);
      c.problems.forEach(([line, field, message], i) => {
        const prefix = `${file}:${line}: ${field}: `;
        const got = lines[i] ?? '';
        expect(got.startsWith(prefix), `expected ${prefix}…, got:\n${r.stderr}`).toBe(true);
        expect(got.slice(prefix.length)).toMatch(message);
      });
    });
  }

  it('passes every shipped pipeline', () => {
    const dir = join(ROOT, 'pipelines');
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml'));
    expect(files.length).toBeGreaterThan(2);
    for (const name of files) {
      const r = cqp(['lint', join(dir, name)]);
      expect(r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
    }
  });

  it('passes the README\'s pipeline file, which is shipped as pipelines/example.yaml', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### The pipeline file'));
    const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(block).toBeDefined();
    const shipped = readFileSync(join(ROOT, 'pipelines/example.yaml'), 'utf8');
    // The shipped file is the README's block, after its own comment lines.
    expect(shipped.replace(/^(#.*\n)+/, '')).toBe(block);
    const r = cqp(['lint', join(ROOT, 'pipelines/example.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
