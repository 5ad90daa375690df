import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline } from '../helpers/pipeline.js';

// A component that refuses its configuration at start is not a crash: restarting it cannot help.
const BAD_VIEWS = 'views:\n  - table: t\n    key: header.rel.id\n    columns:\n      name: payload.name\n    on:\n      create.ice_cream: upsret\n';
const GOOD_VIEWS = 'views:\n  - table: t\n    key: header.rel.id\n    columns:\n      name: payload.name\n    on:\n      create.ice_cream: upsert\n';

function setUp(pipeline: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-config-error-'));
  writeFileSync(join(dir, 'bad-views.yaml'), BAD_VIEWS);
  writeFileSync(join(dir, 'good-views.yaml'), GOOD_VIEWS);
  const file = join(dir, 'p.yaml');
  writeFileSync(file, pipeline);
  return file;
}

function run(file: string): RunningPipeline {
  return runPipeline(file, { metrics: true });
}

// An endless source: without the fix, the run would go on restarting the component.
const SOURCE = 'source: { type: demo, count: 0, rate: 200 }\n';

describe('cqp run with a configuration error found by a component at start', () => {
  const cases: Array<[what: string, pipeline: string, reason: RegExp]> = [
    ['a view following the log', `${SOURCE}sinks:\n  - { name: log, type: log, path: events.log }\n  - { name: views, type: sqlite, db: v.db, views: bad-views.yaml }\n`, /unknown action "upsret"/],
    ['a view following the log, the source ending at once', `source: { type: demo, count: 50 }\nsinks:\n  - { name: log, type: log, path: events.log }\n  - { name: views, type: sqlite, db: v.db, views: bad-views.yaml }\n`, /unknown action "upsret"/],
    ['a view fed by the stages', `${SOURCE}stages:\n  - { name: m, filter: map, with: { expr: "e.m = 1" } }\nsinks:\n  - { name: views, type: sqlite, db: v.db, views: bad-views.yaml }\n`, /unknown action "upsret"/],
    ['a stage', `${SOURCE}stages:\n  - { name: m, filter: map, with: { expr: "e.m = = 1" } }\nsinks:\n  - { name: log, type: log, path: events.log }\n`, /cannot parse expression/],
    ['a run: program that is not found', `${SOURCE}stages:\n  - { name: score, run: no-such-program-cqp }\nsinks:\n  - { name: log, type: log, path: events.log }\n`, /could not start no-such-program-cqp/],
    // A usage error (exit 2 at once, as argparse's): the same exit a reload refuses.
    ['a run: program that exits 2 at once', `${SOURCE}stages:\n  - { name: score, run: [sh, -c, "echo 'score: --model is required' >&2; exit 2"] }\nsinks:\n  - { name: log, type: log, path: events.log }\n`, /score: configuration error at start[\s\S]*score: --model is required/],
  ];
  for (const [what, pipeline, reason] of cases) {
    it(`stops with exit 2 and the reason, without restarts: ${what}`, async () => {
      const p = run(setUp(pipeline));
      expect(await p.exitWithin(120_000), p.stderr()).toBe(2);
      expect(p.stderr()).toMatch(reason);
      expect(p.stderr()).not.toMatch(/restarting/);
    }, 150_000);
  }
});

describe('a reload to a component that refuses its configuration', () => {
  it('is refused with the reason, and the running pipeline goes on as it was', async () => {
    const pipeline = (sinks: string): string => `${SOURCE}sinks:\n  - { name: log, type: log, path: events.log }\n  - { name: views, type: sqlite, db: v.db, views: good-views.yaml }\n${sinks}`;
    const file = setUp(pipeline(''));
    const p = run(file);
    const count = async (name: string): Promise<number> => (await p.stages()).find((s) => s.name === name)?.in ?? 0;
    await eventually(async () => (await count('views')) > 50, { timeoutMs: 60_000, what: 'the views to take events' });
    const before = await p.stages();
    writeFileSync(file, pipeline('  - { name: more, type: sqlite, db: more.db, views: bad-views.yaml }\n'));
    await p.waitFor(/reload #1 refused: more: .*unknown action "upsret"/, 60_000);
    const seen = await count('views');
    await eventually(async () => (await count('views')) > seen + 50, { timeoutMs: 60_000, what: 'the views to go on taking events' });
    const after = await p.stages();
    for (const name of ['source', 'log', 'views']) expect(after.find((s) => s.name === name)?.pid, name).toBe(before.find((s) => s.name === name)?.pid);
    expect(after.map((s) => s.name)).not.toContain('more');
    expect(p.stderr()).not.toMatch(/restarting/);
    expect(p.exited()).toBeUndefined();
  }, 150_000);
});
