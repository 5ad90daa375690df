/**
 * A `cqp run` that a test drives while it runs: waits on what it prints, reads its `/status`, stops it.
 * One command run to its end is in cli.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { BIN } from './cli.js';
import { eventually, GiveUp } from './eventually.js';

/** One stage of `/status`. */
export interface StageStatus {
  name: string;
  pid: number | null;
  generation: number;
  in: number;
  out: number;
  errors: number;
  /** Lines mirrored for `cqp tap`. */
  mirrored: number;
  stalled: number | null;
}

/** What `/status` answers. */
export interface PipelineStatus {
  stages: StageStatus[];
  reloads: { ok: number; failed: number };
}

/** A `cqp run` under test. */
export interface RunningPipeline {
  child: ChildProcess;
  /** What it printed on stderr so far. */
  stderr: () => string;
  /** Resolves with its exit code once it has exited. */
  exit: Promise<number | null>;
  /** The exit code, or undefined while it runs. */
  exited: () => number | null | undefined;
  /** Waits for the exit, failing after `timeoutMs` with stderr. */
  exitWithin(timeoutMs: number): Promise<number | null>;
  /** Waits until stderr matches, failing with stderr when the run exits first or the deadline passes. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** The `HOST:PORT` of `/status` and `/tap` (started with `metrics: true`). */
  address(): Promise<string>;
  /** `/status` (started with `metrics: true`). */
  status(): Promise<PipelineStatus>;
  /** Its stages from `/status`. */
  stages(): Promise<StageStatus[]>;
}

export interface RunOptions {
  /** More arguments after the file. */
  args?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Serve `/status` and `/metrics` on a free port (`--metrics 127.0.0.1:0`). */
  metrics?: boolean;
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
export function runPipeline(file: string, options: RunOptions = {}): RunningPipeline {
  const args = ['run', file, ...(options.metrics ? ['--metrics', '127.0.0.1:0'] : []), ...(options.args ?? [])];
  const child = spawn(process.execPath, [BIN.cqp, ...args], { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  running.push(child);
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (err += t));
  child.stdout?.resume();
  let code: number | null | undefined;
  const exit = new Promise<number | null>((resolve) =>
    child.on('exit', (c) => {
      code = c;
      resolve(c);
    }),
  );
  const waitFor = (pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> =>
    eventually(
      () => {
        const m = err.match(pattern);
        if (m) return m;
        if (code !== undefined) throw new GiveUp(`cqp run exited (${code}) before printing ${pattern}:\n${err}`);
        return undefined;
      },
      { timeoutMs, what: () => `cqp run to print ${pattern}; stderr so far:\n${err}` },
    );
  let address: string | undefined;
  const metricsAddress = async (): Promise<string> => (address ??= (await waitFor(/metrics on http:\/\/([\d.:]+)\//))[1] as string);
  const status = async (): Promise<PipelineStatus> => {
    const res = await fetch(`http://${await metricsAddress()}/status`);
    return (await res.json()) as PipelineStatus;
  };
  return {
    child,
    stderr: () => err,
    exit,
    exited: () => code,
    exitWithin: (timeoutMs) => eventually(() => (code === undefined ? undefined : { code }), { timeoutMs, what: () => `cqp run to exit; stderr:\n${err}` }).then((r) => r.code),
    waitFor,
    address: metricsAddress,
    status,
    stages: async () => (await status()).stages,
  };
}

/** A new temporary folder. */
export function tmpDir(): string {
  return mkdtempSync(join(tmpdir(), 'cqp-pipeline-'));
}
