import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../log/helpers.js';
import { BIN, cqp, shellCommand as cli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { dumpViews } from '../helpers/views.js';

// A stage started by a supervisor that is already gone (killed -9 while its stages start): it must
// see that at once, stop by itself, and never write into a file descriptor it no longer owns.
const VIEWS = join(import.meta.dirname, '../../pipelines/views/ice-creams.yaml');

const started: ChildProcess[] = [];
afterEach(() => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

function sh(script: string, cwd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-c', script], { cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A command log of `count` demo events in `dir`. */
function demoLog(dir: string, count: number): void {
  const r = sh(`${cli('source', `demo --count ${count}`)} | ${cli('sink', 'log --path events.log')}`, dir);
  expect(r.status, r.stderr).toBe(0);
}

/** Spawns a process and records how it ends. */
function track(child: ChildProcess): { exit: () => { code: number | null; signal: NodeJS.Signals | null } | undefined; stderr: () => string } {
  started.push(child);
  let ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (err += t));
  child.stdout?.resume();
  child.on('exit', (code, signal) => (ended = { code, signal }));
  return { exit: () => ended, stderr: () => err };
}

function integrity(db: string): string {
  const d = new Database(db, { readonly: true });
  try {
    return String(d.pragma('integrity_check', { simple: true }));
  } finally {
    d.close();
  }
}

describe('a stage whose supervisor is already gone when it starts', () => {
  test('a source whose control channel closed before it listened stops by itself', async () => {
    const dir = tempDir();
    const child = spawn(process.execPath, [BIN.source, 'demo', '--rate', '200'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    // The supervisor goes before the stage has even loaded its code.
    child.disconnect();
    const run = track(child);
    const ended = await eventually(run.exit, { timeoutMs: 20_000, what: 'the source to stop after its control channel closed' });
    expect(ended, run.stderr()).toEqual({ code: 0, signal: null });
  });

  test('a sink following the log, whose ready pipe ended during start-up, stops by itself', async () => {
    const dir = tempDir();
    demoLog(dir, 500);
    const child = spawn(process.execPath, [BIN.sink, 'file', '--path', 'out.ndjson', '--read-log', 'events.log', '--follow'], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      env: { ...process.env, CQP_READY_FD: '3' },
    });
    child.stdio[3]?.destroy();
    const run = track(child);
    const ended = await eventually(run.exit, { timeoutMs: 20_000, what: 'the following sink to stop after its supervisor was gone' });
    expect(ended, run.stderr()).toEqual({ code: 0, signal: null });
    // What it wrote is events of the log, in order, and nothing else.
    const log = cqp(['log', 'cat', 'events.log'], { cwd: dir }).stdout.trimEnd().split('\n');
    const out = readFileSync(join(dir, 'out.ndjson'), 'utf8');
    const lines = out === '' ? [] : out.trimEnd().split('\n');
    expect(lines).toEqual(log.slice(0, lines.length));
  });

  test('a log sink reading a log never writes into its log once the ready pipe ended (a socket closed by the other side)', async () => {
    const dir = tempDir();
    demoLog(dir, 20_000);
    const child = spawn(process.execPath, [BIN.sink, 'log', '--path', 'copy.log', '--read-log', 'events.log'], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      env: { ...process.env, CQP_READY_FD: '3' },
    });
    child.stdio[3]?.destroy();
    const run = track(child);
    const ended = await eventually(run.exit, { timeoutMs: 30_000, what: 'the log sink to end' });
    expect(ended, run.stderr()).toEqual({ code: 0, signal: null });
    const verify = cqp(['log', 'verify', 'copy.log'], { cwd: dir });
    expect(verify.status, verify.stdout + verify.stderr).toBe(0);
  });

  test('the reproduction: a views sink following the log, its ready pipe at its end, then SIGTERM', async () => {
    const dir = tempDir();
    demoLog(dir, 2000);
    const sqlite = cli('sink', `sqlite --db views.db --views ${JSON.stringify(VIEWS)} --read-log events.log`);
    expect(sh(sqlite, dir).status).toBe(0);
    const child = spawn('bash', ['-c', `CQP_READY_FD=3 exec ${sqlite} --follow 3< <(true)`], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    const run = track(child);
    // It stops by itself; a SIGTERM later (as in the report) must find it gone or stop it.
    await eventually(run.exit, { timeoutMs: 20_000, what: 'the views sink to stop after its supervisor was gone' }).catch(() => child.kill('SIGTERM'));
    const ended = await eventually(run.exit, { timeoutMs: 10_000, what: 'the views sink to stop on SIGTERM' });
    expect(ended, run.stderr()).toEqual({ code: 0, signal: null });
    expect(integrity(join(dir, 'views.db'))).toBe('ok');
    expect(sh(cli('sink', `sqlite --db clean.db --views ${JSON.stringify(VIEWS)} --read-log events.log`), dir).status).toBe(0);
    expect(dumpViews(join(dir, 'views.db'))).toEqual(dumpViews(join(dir, 'clean.db')));
  });
});
