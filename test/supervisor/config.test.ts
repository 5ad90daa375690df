import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CqpError } from '../../src/core/errors.js';
import { loadPipeline, parsePipeline } from '../../src/supervisor/config.js';
import { expandVariables, splitCommandLine } from '../../src/supervisor/pipeline-text.js';

const GOOD = `name: t
source: { type: demo, count: 10 }
stages:
  - { name: validate, filter: validate }
  - { name: enrich, filter: enrich }
  - { name: score, run: "python3 score.py --x 'a b'" }
sinks:
  - { name: out, type: file, path: out/events.ndjson, where: "e.payload.price > 1" }
`;

function problems(text: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    parsePipeline(text, 'p.yaml', env);
  } catch (error) {
    expect(error).toBeInstanceOf(CqpError);
    expect((error as CqpError).code).toBe('CONFIG');
    return (error as Error).message;
  }
  throw new Error('expected the pipeline to be refused');
}

describe('parsePipeline', () => {
  it('resolves stages to the commands a user could type, paths against the file folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-config-'));
    const file = join(dir, 'p.yaml');
    writeFileSync(file, GOOD);
    const plan = loadPipeline(file);
    expect(plan.source.command.args.slice(1)).toEqual(['source', 'demo', '--count', '10']);
    expect(plan.stages.map((s) => s.name)).toEqual(['validate', 'enrich', 'score']);
    expect(plan.stages[1]?.command.args.slice(1)).toEqual(['filter', 'enrich']);
    expect(plan.stages[2]?.command).toEqual({ file: 'python3', args: ['score.py', '--x', 'a b'] });
    expect(plan.sinks[0]?.options.path).toBe(join(dir, 'out/events.ndjson'));
    expect(plan.sinks[0]?.whereCommand?.args.slice(1)).toEqual(['filter', 'where', '--expr', 'e.payload.price > 1']);
  });

  it('names file, line and field, and suggests the nearest filter', () => {
    const text = GOOD.replace('filter: enrich', 'filter: enrih');
    expect(problems(text)).toMatch(/^p\.yaml:5: stages\[1\]\.filter: unknown filter "enrih" — did you mean "enrich"\?/);
  });

  it('reports every problem, each on its line', () => {
    const text = `source: { type: demo, cuont: 5 }
stages:
  - { name: a, filter: map, with: { expr: "e.x = 1", exp: 2 } }
  - { name: a, filter: where, with: { expr: "e.x" } }
sinks:
  - { name: out, typo: 1, type: stdout }
`;
    const message = problems(text);
    expect(message).toContain('p.yaml:1: source.cuont: unknown option "cuont" for source demo — did you mean "count"?');
    expect(message).toContain('p.yaml:3: stages[0].with.exp: unknown option "exp" for filter map — did you mean "expr"?');
    expect(message).toContain('p.yaml:4: stages[1].name: name "a" is already used (at line 3)');
    expect(message).toContain('p.yaml:6: sinks[0].typo: unknown option "typo" for sink stdout');
  });

  it('validates option values with the component schema', () => {
    expect(problems(GOOD.replace('count: 10', 'count: many'))).toMatch(/^p\.yaml:2: source\.count: source demo: --count: /);
  });

  it('refuses unknown fields, stages without filter or run, and YAML that does not parse', () => {
    expect(problems(GOOD.replace('name: t', 'nmae: t'))).toContain('unknown field "nmae" — did you mean "name"?');
    expect(problems(GOOD.replace('filter: validate', 'fitler: validate'))).toMatch(/p\.yaml:4: .*unknown field "fitler" — did you mean "filter"\?/);
    expect(problems(GOOD.replace('{ name: enrich, filter: enrich }', '{ name: enrich }'))).toContain('either filter: NAME');
    expect(problems('source: [')).toMatch(/^p\.yaml:1: .*not valid YAML/);
    expect(problems(GOOD.replace('e.payload.price > 1', 'e.payload.price >'))).toContain('sinks[0].where: cannot parse expression "e.payload.price >"');
  });

  it('expands environment variables, with defaults, and names an unset one', () => {
    const text = GOOD.replace('count: 10', 'count: "${N:-7}"').replace('path: out/events.ndjson', 'path: "${OUT}/e.ndjson"');
    const plan = parsePipeline(text, '/x/p.yaml', { OUT: '/data' });
    expect(plan.source.options.count).toBe(7);
    expect(plan.sinks[0]?.options.path).toBe('/data/e.ndjson');
    expect(problems(text)).toMatch(/p\.yaml:8: sinks\[0\]\.path: environment variable OUT is not set/);
  });
});

describe('helpers', () => {
  it('splits command lines like a shell', () => {
    expect(splitCommandLine(`a 'b c' "d \\"e\\"" f\\ g ''`)).toEqual(['a', 'b c', 'd "e"', 'f g', '']);
    expect(() => splitCommandLine(`a 'b`)).toThrow(/unclosed/);
  });
  it('expands ${VAR} and ${VAR:-default}', () => {
    expect(expandVariables('${A}-${B:-x}-${C:-}', { A: '1' })).toBe('1-x-');
    expect(() => expandVariables('${A}', {})).toThrow(/A is not set/);
  });
  it('a group worker shares its postgres sink with the group; a store the workers cannot share is refused, naming the sink', () => {
    const plan = parsePipeline(
      'source: { type: log, path: "nats://127.0.0.1:4222/events", group: views }\nsinks:\n  - { name: views, type: postgres, url: "postgres://p@127.0.0.1:5432/test" }\n',
      'p.yaml',
    );
    expect(plan.source.group).toBe('views');
    expect(plan.sinks[0]?.options.group).toBe('views');
    expect(plan.sinks[0]?.command.args.slice(-2)).toEqual(['--group', 'views']);
    const message = problems('source: { type: log, path: "nats://127.0.0.1:4222/events", group: views }\nsinks:\n  - { name: db, type: sqlite, db: v.db }\n');
    expect(message).toMatch(/sinks\[0\]|sinks\.0|line 3/);
    expect(message).toContain('a sqlite sink cannot be written by the workers of group views together');
    expect(problems('source: { type: log, path: "nats://127.0.0.1:4222/events", group: "a b" }\nsinks:\n  - { name: out, type: stdout }\n')).toContain('a group name is letters, digits, _ and - only');
  });
});
