import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { BIN } from './cli.js';
import { eventually as waitUntil } from './eventually.js';

/** A `cqp run` under test: its process, what it printed on stderr so far, and its exit code. */
export interface RunningPipeline {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number | null>;
}

const running: ChildProcess[] = [];
afterEach(async () => {
  for (const child of running.splice(0)) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    // A second signal makes the supervisor kill every stage (a SIGKILL would leave them running).
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGTERM'), 100);
    await exited;
  }
});

/** Starts `cqp run FILE`; the test file's afterEach stops it if the test did not. */
export function runPipeline(file: string): RunningPipeline {
  const child = spawn(process.execPath, [BIN.cqp, 'run', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(child);
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (err += t));
  child.stdout?.resume();
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exit };
}

/** Runs `cqp ARGS` to its end, with `input` on its stdin. */
export function cqpSync(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN.cqp, ...args], { encoding: 'utf8', input, maxBuffer: 1 << 28 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The shared `eventually`, with a longer default deadline for whole pipelines. */
export function eventually(check: () => boolean, { timeoutMs = 60_000, what }: { timeoutMs?: number; what: string }): Promise<boolean> {
  return waitUntil(check, { timeoutMs, what });
}

/** A new temporary folder. */
export function tmpDir(): string {
  return mkdtempSync(join(tmpdir(), 'cqp-pipeline-'));
}
