import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from './cli.js';
import { eventually } from './eventually.js';

/** One stage of `/status`. */
export interface StageStatus {
  name: string;
  pid: number | null;
  generation: number;
  in: number;
  out: number;
  errors: number;
  stalled: number | null;
}

/** A `cqp run` started by a test, with `--metrics` on a free port. */
export interface RunningPipeline {
  child: ChildProcess;
  stderr: () => string;
  /** The exit code, or undefined while it runs. */
  exited: () => number | null | undefined;
  /** Waits until stderr matches (failing with stderr when the run exits first or the deadline passes). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Its stages from `/status`. */
  stages(): Promise<StageStatus[]>;
  /** Waits for the exit, failing after `timeoutMs` with stderr. */
  exit(timeoutMs: number): Promise<number | null>;
}

/** Starts `cqp run FILE --metrics 127.0.0.1:0 ARGS…`. */
export function runPipeline(file: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): RunningPipeline {
  const child = spawn(process.execPath, [BIN.cqp, 'run', file, '--metrics', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (err += t));
  child.stdout?.resume();
  let code: number | null | undefined;
  child.on('exit', (c) => (code = c));
  const exited = (): number | null | undefined => code;
  const waitFor = (pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> =>
    eventually(
      () => {
        const m = err.match(pattern);
        if (m) return m;
        if (code !== undefined) throw new Error(`cqp run exited (${code}) before printing ${pattern}:\n${err}`);
        return undefined;
      },
      { timeoutMs, what: `cqp run to print ${pattern}; stderr so far:\n${err}` },
    );
  let address: string | undefined;
  return {
    child,
    stderr: () => err,
    exited,
    waitFor,
    async stages() {
      address ??= (await waitFor(/metrics on http:\/\/([\d.:]+)\//))[1] as string;
      const res = await fetch(`http://${address}/status`);
      return ((await res.json()) as { stages: StageStatus[] }).stages;
    },
    exit: (timeoutMs) => eventually(() => (code === undefined ? undefined : { code }), { timeoutMs, what: `cqp run to exit; stderr:\n${err}` }).then((r) => r.code),
  };
}
