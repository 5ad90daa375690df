import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline, type StageStatus } from '../helpers/pipeline.js';
import { alive } from '../helpers/processes.js';

// A stage that stops answering (SIGSTOP, a hung loop) is shown as stalled, and it cannot hold a
// shutdown forever: the drain has a limit, after which the supervisor names it and kills what is left.
const stopped: number[] = [];
// Before the shared afterEach of pipeline.ts stops the run (hooks after a test run last-registered first).
afterEach(() => {
  for (const pid of stopped.splice(0)) if (alive(pid)) process.kill(pid, 'SIGCONT');
});

/** An endless pipeline: demo → a → b → a log. */
function pipeline(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-stall-'));
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    `source: { type: demo, count: 0, rate: 200 }
stages:
  - { name: a, filter: map, with: { expr: "e.a = 1" } }
  - { name: b, filter: map, with: { expr: "e.b = 1" } }
sinks:
  - { name: log, type: log, path: events.log }
`,
  );
  return file;
}

function start(args: string[]): RunningPipeline {
  return runPipeline(pipeline(), { metrics: true, args });
}

async function stage(run: RunningPipeline, name: string): Promise<StageStatus> {
  const found = (await run.stages()).find((s) => s.name === name);
  if (!found) throw new Error(`no stage ${name} in /status`);
  return found;
}

/** Waits until `b` has events through it, then SIGSTOPs it; returns its pid. */
async function stopB(run: RunningPipeline): Promise<number> {
  const b = await eventually(async () => {
    const s = await stage(run, 'b');
    return s.out > 0 && s.pid !== null ? s : undefined;
  }, { timeoutMs: 30_000, what: 'events through stage b' });
  const pid = b.pid as number;
  process.kill(pid, 'SIGSTOP');
  stopped.push(pid);
  return pid;
}

describe('a stage that stops answering', () => {
  test('is shown as stalled in /status and the status lines while stopped, and normal again once it goes on', async () => {
    const run = start(['--status-interval', '1']);
    const pid = await stopB(run);
    const stalled = await eventually(async () => {
      const s = await stage(run, 'b');
      return s.stalled !== null ? s : undefined;
    }, { timeoutMs: 30_000, what: 'stage b shown as stalled in /status' });
    expect(stalled.pid).toBe(pid);
    expect(stalled.stalled).toBeGreaterThanOrEqual(5);
    // Stages blocked behind it (a writes into b's full pipe) still answer: they are not stalled.
    await eventually(async () => (await stage(run, 'a')).stalled === null, { timeoutMs: 30_000, what: 'stage a, blocked behind b, not shown as stalled' });
    await run.waitFor(/\| b out=[\d,]+ \([\d,]+\/s\) stalled \(no report for \d+ s\)/);
    process.kill(pid, 'SIGCONT');
    await eventually(async () => (await stage(run, 'b')).stalled === null, { timeoutMs: 30_000, what: 'stage b no longer stalled after SIGCONT' });
    run.child.kill('SIGTERM');
    expect(await run.exitWithin(60_000), run.stderr()).toBe(0);
  });

  test('holds the drain after SIGTERM only until --drain-timeout: it is named, everything left is killed, exit 1', async () => {
    const run = start(['--drain-timeout', '3']);
    const pid = await stopB(run);
    const pids = (await run.stages()).map((s) => s.pid).filter((p): p is number => p !== null);
    run.child.kill('SIGTERM');
    expect(await run.exitWithin(60_000)).toBe(1);
    expect(run.stderr()).toMatch(new RegExp(`the drain made no progress for 3 s: b \\(pid ${pid}\\) holds it`));
    await eventually(() => pids.every((p) => !alive(p)), { timeoutMs: 10_000, what: `every stage process gone (${pids.join(', ')})` });
  });
});
