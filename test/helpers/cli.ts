/**
 * Running one of cqp's commands to its end, as a user would: `cqp(args)` waits for it (spawnSync),
 * `cqpAsync(args)` lets the test go on meanwhile. `bin` picks another entry point than `cqp`
 * (`cqp-filter`, `cqp-source`, `cqp-sink`). A `cqp run` that a test drives while it runs is in pipeline.ts.
 */
import { readFileSync } from 'node:fs';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built entry points the tests spawn, as a user would run them. */
export const BIN = {
  cqp: fileURLToPath(new URL('../../bin/cqp.js', import.meta.url)),
  filter: fileURLToPath(new URL('../../bin/cqp-filter.js', import.meta.url)),
  source: fileURLToPath(new URL('../../bin/cqp-source.js', import.meta.url)),
  sink: fileURLToPath(new URL('../../bin/cqp-sink.js', import.meta.url)),
} as const;

export type Bin = keyof typeof BIN;

export interface CliOptions {
  /** The entry point; `cqp` unless given. */
  bin?: Bin;
  input?: string | Buffer;
  cwd?: string;
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
}

export interface CliResult {
  /** The exit code (null when a signal ended it). */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The shell words that run an entry point, for tests that build pipelines with `|`. */
export function shellCommand(bin: Bin, args: string): string {
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN[bin])} ${args}`;
}

/** Runs `cqp ARGS` (or another entry point) to its end, with `input` on its stdin. */
export function cqp(args: string[], options: CliOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN[options.bin ?? 'cqp'], ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    input: options.input,
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** `cqp` without blocking this process: the test's own servers and timers keep running meanwhile. */
export function cqpAsync(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = spawnCli(options.bin ?? 'cqp', args, options);
  child.stdin?.end(options.input);
  return collect(child);
}

/** Spawns one of cqp's bins with piped stdio, for a test that drives it while it runs. */
export function spawnCli(bin: Bin, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  const child = spawn(process.execPath, [BIN[bin], ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin?.on('error', () => undefined);
  return child;
}

/** Waits for a child to exit and returns its output. */
export function collect(child: ChildProcess): Promise<CliResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr?.on('data', (d: Buffer) => err.push(d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

/** Lines of NDJSON output, parsed. */
export function parseLines(text: string): Record<string, unknown>[] {
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** RSS of a process in MiB, read from /proc. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : 0;
}
