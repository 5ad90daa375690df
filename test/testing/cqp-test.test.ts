import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cqp } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { alive } from '../helpers/processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// A pipeline with a stage to insert into, a stage that drops, a log with views following it, an
// external sink (a kinesis endpoint nothing listens on: publishing would fail) and a sink behind where.
const PIPELINE = `name: shop
source: { type: stdin }
stages:
  - { name: tag, filter: map, with: { expr: "e.tagged = true" } }
  - { name: big, filter: where, with: { expr: "e.n > 1" } }
sinks:
  - { name: log, type: log, path: data/events.log }
  - { name: views, type: sqlite, db: data/views.db, views: views.yaml }
  - { name: stream, type: kinesis, stream: orders, endpoint: "http://127.0.0.1:9" }
  - { name: audit, type: file, path: data/audit.ndjson, where: "e.kind === 'refund'" }
`;
const VIEWS = `views:
  - table: totals
    key: id
    type: kind
    columns:
      n: { path: n, type: integer }
    on:
      order: upsert
`;

const dir = mkdtempSync(join(tmpdir(), 'cqp-test-cmd-'));
writeFileSync(join(dir, 'pipeline.yaml'), PIPELINE);
writeFileSync(join(dir, 'views.yaml'), VIEWS);
writeFileSync(join(dir, 'orders.ndjson'), '{"id":"a","kind":"order","n":2}\n{"id":"b","kind":"refund","n":3}');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a test file into the pipeline's folder and runs `cqp test` on it there. */
function runTestFile(name: string, text: string): ReturnType<typeof cqp> {
  writeFileSync(join(dir, name), text);
  return cqp(['test', name], { cwd: dir });
}

describe('cqp test', () => {
  it('passes the tests shipped beside the pipelines, run over the folder', () => {
    const r = cqp(['test', 'pipelines'], { cwd: ROOT });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('pipelines/ice-creams.test.yaml\n');
    expect(r.stdout).toContain('pipelines/example.test.yaml\n');
    const passed = r.stdout.split('\n').filter((l) => /^ {2}passed {2}.+ \(\d+ ms\)$/.test(l)).length;
    expect(passed).toBeGreaterThanOrEqual(7);
    expect(r.stdout).toMatch(new RegExp(`\\n${passed} passed, 0 failed\\n$`));
    expect(r.status).toBe(0);
  });

  it('feeds a middle stage, reads stages, sinks and views, and never writes the pipeline\'s own stores', () => {
    const r = runTestFile(
      'pass.test.yaml',
      `pipeline: pipeline.yaml
tests:
  - name: into a middle stage
    inputs:
      - insert_at: big
        events: [{ id: a, n: 1 }, { id: b, n: 5 }]
    outputs:
      - extract_from: big
        count: 1
        conditions: [{ json_equals: { id: b, n: 5 } }]
      - extract_from: stream
        count: 1
    no_outputs_from: [tag, audit]
  - name: from a file to the views
    inputs:
      - insert_at: source
        file: orders.ndjson
    outputs:
      - extract_from: tag
        count: 2
        conditions: [{ expr: "e.tagged === true" }]
      - extract_from: audit
        conditions: [{ json_contains: { kind: refund } }]
    views:
      - { sink: views, query: "SELECT id, n FROM totals ORDER BY id", rows: [{ id: a, n: 2 }] }
`,
    );
    expect(r.stdout).toMatch(/^ {2}passed {2}into a middle stage \(\d+ ms\)$/m);
    expect(r.stdout).toMatch(/^ {2}passed {2}from a file to the views \(\d+ ms\)$/m);
    expect(r.stdout).toMatch(/\n2 passed, 0 failed\n$/);
    expect(r.status).toBe(0);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('prints each failed condition where it is in the file, with a diff of expected and actual, and exits 1', () => {
    const r = runTestFile(
      'fail.test.yaml',
      `pipeline: pipeline.yaml
tests:
  - name: fine
    inputs: [{ insert_at: source, events: [{ id: a, kind: order, n: 2 }] }]
    outputs: [{ extract_from: log, count: 1 }]
  - name: wrong n
    inputs: [{ insert_at: source, events: [{ id: a, kind: order, n: 2 }] }]
    outputs:
      - extract_from: tag
        conditions:
          - json_contains: { n: 3 }
  - name: a refund leaks
    inputs: [{ insert_at: source, events: [{ id: r, kind: refund, n: 7 }] }]
    no_outputs_from: [audit]
  - name: wrong rows
    inputs: [{ insert_at: source, events: [{ id: a, kind: order, n: 2 }] }]
    views:
      - { sink: views, query: "SELECT id, n FROM totals", rows: [{ id: a, n: 5 }] }
`,
    );
    expect(r.stdout).toMatch(/^ {2}passed {2}fine \(\d+ ms\)$/m);
    expect(r.stdout).toMatch(/^ {2}FAILED {2}wrong n \(\d+ ms\)$/m);
    expect(r.stdout).toContain(
      [
        '    fail.test.yaml:11: tests[1].outputs[0].conditions[0]: json_contains: event 1 of 1 from tag differs (fields the condition names)',
        '      - expected',
        '      + actual',
        '        {',
        '      -   "n": 3',
        '      +   "n": 2',
        '        }',
      ].join('\n'),
    );
    expect(r.stdout).toContain(
      [
        '    fail.test.yaml:14: tests[2].no_outputs_from[0]: 1 event came out of audit, expected none',
        '      - expected',
        '      + actual',
        '      + {"id":"r","kind":"refund","n":7,"tagged":true}',
      ].join('\n'),
    );
    expect(r.stdout).toContain(
      [
        '    fail.test.yaml:18: tests[3].views[0].rows: the rows of SELECT id, n FROM totals on views differ',
        '      - expected',
        '      + actual',
        '      - {"id":"a","n":5}',
        '      + {"id":"a","n":2}',
      ].join('\n'),
    );
    expect(r.stdout).toMatch(/\n1 passed, 3 failed\n$/);
    expect(r.status).toBe(1);
  });

  it('with no argument runs every test file under the current folder but node_modules; servers are never contacted', () => {
    const home = mkdtempSync(join(tmpdir(), 'cqp-test-find-'));
    try {
      mkdirSync(join(home, 'shop'));
      mkdirSync(join(home, 'node_modules/dep'), { recursive: true });
      writeFileSync(join(home, 'node_modules/dep/broken.test.yaml'), 'pipeline: [');
      writeFileSync(join(home, 'shop/views.yaml'), VIEWS);
      // Nothing listens on port 9: a log published to JetStream or views written to PostgreSQL would fail the test.
      writeFileSync(
        join(home, 'shop/served.yaml'),
        `source: { type: stdin }
sinks:
  - { name: log, type: log, path: "nats://127.0.0.1:9/orders", partitions: 4 }
  - { name: views, type: sqlite, db: data/views.db, views: views.yaml }
  - { name: pg, type: postgres, url: "postgres://postgres@127.0.0.1:9/test", views: views.yaml }
`,
      );
      writeFileSync(
        join(home, 'shop/served.test.yaml'),
        `pipeline: served.yaml
tests:
  - name: captured
    inputs: [{ insert_at: source, events: [{ id: a, kind: order, n: 4 }] }]
    outputs: [{ extract_from: pg, count: 1, conditions: [{ json_equals: { id: a, kind: order, n: 4 } }] }]
    views: [{ sink: views, query: "SELECT id, n FROM totals", rows: [{ id: a, n: 4 }] }]
`,
      );
      const r = cqp(['test'], { cwd: home });
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^shop\/served\.test\.yaml\n {2}passed {2}captured \(\d+ ms\)\n1 passed, 0 failed\n$/);
      expect(r.status).toBe(0);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('stops a test that runs longer than --timeout, naming where it was, and kills its programs', async () => {
    const program = "require('fs').writeFileSync('hang.pid', String(process.pid)); setInterval(() => {}, 1000)";
    writeFileSync(join(dir, 'hang.yaml'), `source: { type: stdin }\nstages:\n  - { name: hang, run: ["node", "-e", ${JSON.stringify(program)}] }\nsinks:\n  - { name: out, type: stdout }\n`);
    writeFileSync(join(dir, 'hang.test.yaml'), 'pipeline: hang.yaml\ntests:\n  - name: never ends\n    inputs: [{ insert_at: source, events: [{ id: a }] }]\n    outputs: [{ extract_from: out, count: 1 }]\n');
    const started = Date.now();
    const r = cqp(['test', '--timeout', '1', 'hang.test.yaml'], { cwd: dir });
    expect(r.stdout).toMatch(/^ {2}FAILED {2}never ends \(1\d{3} ms\)\n {4}hang\.test\.yaml:3: tests\[0\]: timed out after 1 s, in stage hang /m);
    expect(r.stdout).toMatch(/\n0 passed, 1 failed\n$/);
    expect(r.status).toBe(1);
    expect(Date.now() - started).toBeLessThan(10_000);
    const pid = Number(readFileSync(join(dir, 'hang.pid'), 'utf8'));
    await eventually(() => !alive(pid), { timeoutMs: 5000, what: `the program (pid ${pid}) killed` });
  });

  it('explains the test file in --help', () => {
    const r = cqp(['test', '--help']);
    for (const word of ['insert_at', 'extract_from', 'json_contains', 'json_equals', 'expr', 'no_outputs_from', 'views', 'N passed, M failed', 'Exit 0']) expect(r.stdout).toContain(word);
    expect(r.status).toBe(0);
  });

  it.each([
    ['a misspelt field', 'outputs:\n      - extract_from: big\n        conditons: []', 'typo.test.yaml:9: tests[0].outputs[0].conditons: unknown field "conditons" — did you mean "conditions"? (fields: extract_from, count, conditions)'],
    ['a stage the pipeline lacks', 'outputs:\n      - extract_from: bigg', `typo.test.yaml:8: tests[0].outputs[0].extract_from: "bigg" is not a stage or a sink of ${join(dir, 'pipeline.yaml')} — did you mean "big"? (tag, big, log, views, stream, audit)`],
    ['an expression that does not parse', 'outputs:\n      - extract_from: big\n        conditions: [{ expr: "e.n >" }]', 'typo.test.yaml:9: tests[0].outputs[0].conditions[0].expr: cannot parse expression "e.n >"'],
    ['not YAML', 'outputs: [', 'typo.test.yaml:8: '],
  ])('refuses %s with FILE:LINE and exit 2', (_what, tail, message) => {
    const r = runTestFile('typo.test.yaml', `pipeline: pipeline.yaml\ntests:\n  - name: t\n    inputs:\n      - insert_at: tag\n        events: [{ id: a }]\n    ${tail}\n`);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe('0 passed, 0 failed (1 file did not load)\n');
    expect(r.status).toBe(2);
  });
});
