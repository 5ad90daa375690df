import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, test } from 'vitest';
import { BIN } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';

// The acceptance test for crashes of the supervisor itself: `cqp run` of an endless pipeline with a log
// and views following it, killed -9 at random moments (start-up included) and started again, then
// stopped cleanly. Nothing of it may be left running, the log verifies, and the views are exactly what a
// clean build from the log gives (nothing applied twice, nothing lost).
const RUNS = Number(process.env.CQP_CRASH_LOOP_RUNS ?? 20);
const VIEWS = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');
const dir = mkdtempSync(join(tmpdir(), 'cqp-crash-loop-'));

afterAll(() => {
  for (const pid of processesOf(dir)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Pids of processes whose command line or working folder is in `folder` (this test's processes). */
function processesOf(folder: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline === '') continue; // a zombie: already exited
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${pid}/cwd`);
      } catch {
        // Another user's process.
      }
      if (cmdline.includes(folder) || cwd === folder || cwd.startsWith(`${folder}/`)) pids.push(pid);
    } catch {
      // It exited meanwhile.
    }
  }
  return pids;
}

function describeProcesses(pids: number[]): string {
  return pids
    .map((pid) => {
      try {
        return `${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')}`;
      } catch {
        return `${pid}: (gone)`;
      }
    })
    .join('\n');
}

function cqp(bin: keyof typeof BIN, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN[bin], ...args], { cwd: dir, encoding: 'utf8', maxBuffer: 256 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function dump(db: string): Record<string, unknown[]> {
  const d = new Database(db, { readonly: true });
  try {
    const tables = d.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_cqp%' ESCAPE '\\' ORDER BY name").all() as Array<{ name: string }>;
    return Object.fromEntries(tables.map(({ name }) => [name, d.prepare(`SELECT * FROM "${name}" ORDER BY 1`).all()]));
  } finally {
    d.close();
  }
}

/** Starts `cqp run` of the pipeline; resolves its exit code once it has exited. */
function startRun(): { pid: number; stderr: () => string; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>; kill: (signal: NodeJS.Signals) => void } {
  const child = spawn(process.execPath, [BIN.cqp, 'run', join(dir, 'pipeline.yaml')], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { pid: child.pid as number, stderr: () => err, exit, kill: (signal) => child.kill(signal) };
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
      run.kill('SIGKILL');
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
    last.kill('SIGTERM');
    const ended = await last.exit;

    // Stages stop by themselves once their supervisor is gone: none is left for long.
    await eventually(() => processesOf(dir).length === 0, {
      timeoutMs: 60_000,
      what: `every process of the pipeline to exit (kills after ${delays.join(', ')} ms); left:\n${describeProcesses(processesOf(dir))}`,
    });
    expect(ended, last.stderr()).toEqual({ code: 0, signal: null });

    const verify = cqp('cqp', ['log', 'verify', 'events.log']);
    expect(verify.status, verify.stdout + verify.stderr).toBe(0);
    const clean = cqp('sink', ['sqlite', '--db', 'clean.db', '--views', VIEWS, '--read-log', 'events.log']);
    expect(clean.status, clean.stderr).toBe(0);
    const views = dump(join(dir, 'views.db'));
    expect(Object.values(views).some((rows) => rows.length > 0)).toBe(true);
    expect(views).toEqual(dump(join(dir, 'clean.db')));
  }, 300_000);
});
