import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, collect, cqpAsync, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';

const VIEWS = fileURLToPath(new URL('../../pipelines/views/ice-creams.yaml', import.meta.url));
const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

const dirs: string[] = [];
const started: ChildProcess[] = [];
afterAll(() => {
  // Whatever a failed test left behind: every process of its pipelines, found as the test finds them.
  for (const dir of dirs) for (const p of pipelineProcesses(dir)) process.kill(p.pid, 'SIGKILL');
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * A folder set up as a project where `npx cqp` runs this checkout's bin, as in a clone: npm exec
 * wraps it in npm and a shell, with nothing to install.
 */
function project(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-stop-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'package.json'), '{"name": "cqp-stop-test", "private": true}\n');
  mkdirSync(join(dir, 'node_modules/.bin'), { recursive: true });
  symlinkSync(BIN.cqp, join(dir, 'node_modules/.bin/cqp'));
  writeFileSync(
    join(dir, 'p.yaml'),
    `source: { type: demo, count: 0, rate: 200 }
stages:
  - { name: enrich, filter: enrich }
sinks:
  - { name: log, type: log, path: out/events.log }
  - { name: views, type: sqlite, db: out/views.db, views: ${VIEWS} }
`,
  );
  return dir;
}

/** Every process running in `dir` or naming it on its command line (the supervisor and each stage). */
function pipelineProcesses(dir: string): Array<{ pid: number; command: string }> {
  const found: Array<{ pid: number; command: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      const cwd = readlinkSync(`/proc/${entry}/cwd`);
      if ((cwd === dir || command.includes(dir)) && command.includes('cqp')) found.push({ pid: Number(entry), command });
    } catch {
      // It exited while we looked.
    }
  }
  return found;
}

/** What the child and the processes sharing its pipes print; `closed`: once every one of them has closed them. */
function output(child: ChildProcess): (() => string) & { closed: Promise<void> } {
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (t: string) => (text += t));
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (text += t));
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return Object.assign(() => text, { closed });
}

async function allGone(dir: string, said: ReturnType<typeof output>): Promise<void> {
  await eventually(() => pipelineProcesses(dir).length === 0, {
    timeoutMs: 60_000,
    what: () => `every process of the pipeline to exit; still running:\n${pipelineProcesses(dir).map((p) => `${p.pid} ${p.command}`).join('\n')}\noutput:\n${said()}`,
  });
  // Gone, but what they printed last may still be in the pipe: read to its end.
  await said.closed;
}

describe('stopping `npx cqp run` stops everything', () => {
  it('SIGTERM to the npx process: the orphaned supervisor drains, and no process of the pipeline is left', async () => {
    const dir = project();
    const npx = spawn('npx', ['cqp', 'run', 'p.yaml'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(npx);
    const said = output(npx);
    await eventually(() => /cqp: running/.test(said()), { timeoutMs: 60_000, what: () => `the pipeline to start:\n${said()}` });
    // The supervisor, the source, the stage, the log sink and the view.
    await eventually(() => pipelineProcesses(dir).length >= 5, { what: () => `the pipeline's processes:\n${JSON.stringify(pipelineProcesses(dir))}` });
    npx.kill('SIGTERM');
    await allGone(dir, said);
    expect(said()).toMatch(/the parent process \(pid \d+\) has exited: stopping the source and draining/);
    expect(said()).toMatch(/events in .* s/);
    expect(said()).not.toMatch(/killing/);
    // The log was closed cleanly: every record checks out, and a new writer may take it.
    expect((await cqpAsync(['log', 'verify', join(dir, 'out/events.log')])).status).toBe(0);
  });

  it.skipIf(!hasScript)('Ctrl-C on a terminal (skipped without `script`): the supervisor leads the drain and nothing is left', async () => {
    const dir = project();
    // `script` gives the command a real terminal; ^C written to it becomes SIGINT for the foreground
    // process group (npm, its shell and the supervisor; the stages run in groups of their own).
    const term = spawn('script', ['-qfc', 'npx cqp run p.yaml', '/dev/null'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    started.push(term);
    const said = output(term);
    await eventually(() => /cqp: running/.test(said()), { timeoutMs: 60_000, what: () => `the pipeline to start:\n${said()}` });
    await eventually(() => pipelineProcesses(dir).length >= 5, { what: () => `the pipeline's processes:\n${JSON.stringify(pipelineProcesses(dir))}` });
    term.stdin?.write('\x03');
    await allGone(dir, said);
    expect(said()).toMatch(/SIGINT: stopping the source and draining/);
    expect(said()).toMatch(/events in .* s/);
    expect(said()).not.toMatch(/killing|failed:/);
    term.stdin?.end();
    expect((await cqpAsync(['log', 'verify', join(dir, 'out/events.log')])).status).toBe(0);
  });
});

describe('a stop asked for while `cqp run` starts', () => {
  it('SIGTERM while it is still reading its pipeline file: it starts, drains and exits 0, not killed by the signal', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-early-stop-'));
    dirs.push(dir);
    const file = join(dir, 'p.yaml');
    // A FIFO holds `cqp run` in the read of its pipeline file for as long as the test likes.
    expect(spawnSync('mkfifo', [file]).status).toBe(0);
    const child = spawnCli('cqp', ['run', file], { cwd: dir });
    started.push(child);
    const result = collect(child);
    const pid = child.pid as number;
    await eventually(() => readFileSync(`/proc/${pid}/wchan`, 'utf8') === 'wait_for_partner', { timeoutMs: 30_000, what: 'cqp run waiting to read its FIFO pipeline file' });
    child.kill('SIGTERM');
    // Opening the FIFO waits for its reader: none if the signal killed it.
    const write = writeFile(file, 'source: { type: demo, count: 0, rate: 100 }\nsinks:\n  - { name: log, type: log, path: events.log }\n');
    const { status, signal, stderr } = await result;
    if (signal !== null) spawnSync('sh', ['-c', 'exec 3<"$1"', 'sh', file]);
    await write;
    expect({ status, signal }).toEqual({ status: 0, signal: null });
    expect(stderr).toContain('cqp: SIGTERM: stopping the source and draining the pipeline');
  }, 60_000);
});
