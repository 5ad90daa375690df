import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline } from '../helpers/pipeline.js';

const dirs: string[] = [];
const running: RunningPipeline[] = [];
afterAll(() => {
  for (const p of running) if (p.exited() === undefined) p.child.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('cqp run: a sink that crashes', () => {
  // The stage writing straight into the sink's stdin sees its output close and exits 0: that exit is no
  // crash of its own, the sink's is, and the recovery it starts restarts both.
  it('is restarted after SIGKILL, and the stage that wrote into it is not taken for a crash', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-sink-crash-'));
    dirs.push(dir);
    const file = join(dir, 'p.yaml');
    writeFileSync(file, 'source: { type: demo, count: 0 }\nstages:\n  - { name: m, filter: map, with: { expr: "e.m = 1" } }\nsinks:\n  - { name: out, type: file, path: out.ndjson }\n');
    const p = runPipeline(file, { metrics: true });
    running.push(p);
    const first = await eventually(async () => (await p.stages()).find((s) => s.name === 'out' && s.in > 0 && s.pid !== null), { what: 'the sink to read events' });
    process.kill(first.pid as number, 'SIGKILL');
    await p.waitFor(/out exited unexpectedly \(signal SIGKILL\); restarting it/);
    const again = await eventually(async () => (await p.stages()).find((s) => s.name === 'out' && s.generation === 2 && s.in > first.in), { what: 'a second sink process to read events' });
    expect(again.pid).not.toBe(first.pid);
    expect(p.stderr()).not.toMatch(/\bm exited/);
    p.child.kill('SIGTERM');
    expect(await p.exitWithin(30_000)).toBe(0);
    expect(p.stderr().match(/restarting it/g)).toHaveLength(1);
  });
});
