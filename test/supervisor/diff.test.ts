import { describe, expect, it } from 'vitest';
import { parsePipeline } from '../../src/supervisor/config.js';
import { describeDiff, reloadDiff } from '../../src/supervisor/diff.js';

function plan(stages: string[], sinks: string[] = ['{ name: out, type: stdout }'], source = '{ type: demo, count: 10 }') {
  const text = `source: ${source}\nstages:\n${stages.map((s) => `  - ${s}\n`).join('')}sinks:\n${sinks.map((s) => `  - ${s}\n`).join('')}`;
  return parsePipeline(stages.length === 0 ? text.replace('stages:\n', '') : text, '/p/p.yaml', {});
}

const A = "{ name: a, filter: map, with: { expr: 'e.a = 1' } }";
const A2 = "{ name: a, filter: map, with: { expr: 'e.a = 2' } }";
const B = '{ name: b, filter: enrich }';
const C = "{ name: c, filter: where, with: { expr: 'e.a' } }";
const D = '{ name: d, run: [cat] }';

describe('reloadDiff', () => {
  it('finds nothing when only formatting changes', () => {
    const d = reloadDiff(plan([A, B]), plan([A, B]));
    expect(d.empty).toBe(true);
    expect(describeDiff(d)).toBe('no changes');
  });

  it('a changed option replaces just that stage', () => {
    const d = reloadDiff(plan([A, B, C]), plan([A2, B, C]));
    expect(d).toMatchObject({ added: [], changed: ['a'], removed: [], orderChanged: false, stages: { prefix: 0, oldEnd: 1, newEnd: 1 } });
    expect(describeDiff(d)).toBe('~a');
  });

  it('an added stage is spliced in between unchanged neighbours', () => {
    const d = reloadDiff(plan([A, C]), plan([A, B, C]));
    expect(d).toMatchObject({ added: ['b'], changed: [], removed: [], stages: { prefix: 1, oldEnd: 1, newEnd: 2 } });
  });

  it('a removed stage is drained out', () => {
    const d = reloadDiff(plan([A, B, C]), plan([A, C]));
    expect(d).toMatchObject({ added: [], removed: ['b'], stages: { prefix: 1, oldEnd: 2, newEnd: 1 } });
    expect(describeDiff(d)).toBe('-b');
  });

  it('swapped stages mark the order change and the stretch to rebuild', () => {
    const d = reloadDiff(plan([A, B, C, D]), plan([A, C, B, D]));
    expect(d).toMatchObject({ added: [], changed: [], removed: [], orderChanged: true, stages: { prefix: 1, oldEnd: 3, newEnd: 3 } });
    expect(describeDiff(d)).toBe('(stages reordered)');
  });

  it('sinks and the source are keyed by name too', () => {
    const d = reloadDiff(
      plan([A], ['{ name: out, type: stdout }', '{ name: f, type: file, path: x.ndjson }']),
      plan([A], ['{ name: out, type: stdout, where: "e.a" }', '{ name: g, type: file, path: x.ndjson }'], '{ type: demo, count: 20 }'),
    );
    expect(d.sourceChanged).toBe(true);
    expect(d.stages).toBeUndefined();
    expect(d.sinks).toEqual({ added: ['g'], changed: ['out'], removed: ['f'] });
    expect(describeDiff(d)).toBe('+g ~source ~out -f');
  });
});
