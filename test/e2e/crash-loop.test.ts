import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { cqp } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline } from '../helpers/pipeline.js';
import { noProcessesLeftIn, processesIn } from '../helpers/processes.js';
import { dumpViews } from '../helpers/views.js';

// The acceptance test for crashes of the supervisor itself: `cqp run` of an endless pipeline with a log
// and views following it, killed -9 at random moments (start-up included) and started again, then
// stopped cleanly. Nothing of it may be left running, the log verifies, and the views are exactly what a
// clean build from the log gives (nothing applied twice, nothing lost).
const RUNS = Number(process.env.CQP_CRASH_LOOP_RUNS ?? 20);
const VIEWS = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');
const dir = mkdtempSync(join(tmpdir(), 'cqp-crash-loop-'));

afterAll(() => {
  for (const pid of processesIn(dir)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Starts `cqp run` of the pipeline in its folder. */
function startRun(): RunningPipeline {
  return runPipeline(join(dir, 'pipeline.yaml'), { cwd: dir });
}

describe('cqp run killed -9 at random moments and started again', () => {
  test(`${RUNS} kills: no process left, the log verifies, the views equal a clean build`, async () => {
    writeFileSync(
      join(dir, 'pipeline.yaml'),
      `source: { type: demo, count: 0, rate: 2000 }
stages:
  - { name: validate, filter: validate }
  - { name: enrich, filter: enrich }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: sqlite, db: views.db, views: ${JSON.stringify(VIEWS)} }
`,
    );
    const delays: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const run = startRun();
      const delay = Math.round(100 + Math.random() * 2900);
      delays.push(delay);
      await new Promise((resolve) => setTimeout(resolve, delay));
      run.child.kill('SIGKILL');
      await run.exit;
    }
    // The last run, stopped cleanly once it has appended to the log.
    const last = startRun();
    await eventually(
      () => {
        if (/cqp: running /.test(last.stderr())) return statSync(join(dir, 'events.log'), { throwIfNoEntry: false })?.size;
        return undefined;
      },
      { timeoutMs: 60_000, what: `the last run to start (kills after ${delays.join(', ')} ms); stderr:\n${last.stderr()}` },
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    last.child.kill('SIGTERM');
    const ended = { code: await last.exit, signal: last.child.signalCode };

    // Stages stop by themselves once their supervisor is gone: none is left for long.
    await noProcessesLeftIn(dir, { timeoutMs: 60_000, what: `every process of the pipeline to exit (kills after ${delays.join(', ')} ms)` });
    expect(ended, last.stderr()).toEqual({ code: 0, signal: null });

    const verify = cqp(['log', 'verify', 'events.log'], { cwd: dir });
    expect(verify.status, verify.stdout + verify.stderr).toBe(0);
    const clean = cqp(['sqlite', '--db', 'clean.db', '--views', VIEWS, '--read-log', 'events.log'], { bin: 'sink', cwd: dir });
    expect(clean.status, clean.stderr).toBe(0);
    const views = dumpViews(join(dir, 'views.db'));
    expect(Object.values(views).some((rows) => rows.length > 0)).toBe(true);
    expect(views).toEqual(dumpViews(join(dir, 'clean.db')));
  }, 300_000);
});
