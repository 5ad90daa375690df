import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { CqpError, messageOf } from '../core/errors.js';
import type { SinkProgress } from '../core/runtime.js';
import type { Command } from './config.js';

/** How a process ended. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (ENOENT, EACCES). */
  error?: Error;
}

/** Why the supervisor expects a process to exit: its input was ended, or it was stopped. */
export type ExpectedExit = 'end' | 'stop' | 'kill' | undefined;

export interface SpawnOptions {
  /** The component name, for stderr prefixes and messages. */
  name: string;
  cwd: string;
  /** Give the process the supervisor's own stdin (the `stdin` source). */
  inheritStdin?: boolean;
  /** Give the process the supervisor's own stdout (sinks: the `stdout` sink writes there). */
  inheritStdout?: boolean;
  /** Each stderr line of the process, without its newline. */
  stderrLine: (line: string) => void;
}

/** One running stage, source, sink or helper process of a pipeline. */
export class StageProcess {
  readonly child: ChildProcess;
  readonly exit: Promise<ExitStatus>;
  /** For cqp components: resolves true when the process reported it is ready, false when it never will. */
  readonly ready: Promise<boolean> | undefined;
  expected: ExpectedExit;
  exited: ExitStatus | undefined;
  /** Called with each progress report of a sink reading a log (`{"in":N,"at":{…}}` lines after `ready`). */
  onProgress: ((progress: SinkProgress) => void) | undefined;

  constructor(
    readonly command: Command,
    readonly options: SpawnOptions,
  ) {
    const stdio: Array<'inherit' | 'pipe'> = [options.inheritStdin ? 'inherit' : 'pipe', options.inheritStdout ? 'inherit' : 'pipe', 'pipe'];
    if (command.signalsReady) stdio.push('pipe');
    this.child = spawn(command.file, command.args, {
      cwd: options.cwd,
      stdio,
      env: command.signalsReady ? { ...process.env, CQP_READY_FD: '3' } : process.env,
      // Its own process group: Ctrl-C on a terminal reaches the supervisor only, which then stops the
      // source and drains the stages in order (a stage that got SIGINT itself would stop reading mid-pipe).
      detached: true,
    });
    this.exit = new Promise((resolve) => {
      this.child.once('error', (error) => {
        // A spawn failure emits 'error' and may never emit 'exit'.
        if (this.child.pid === undefined) {
          this.exited = { code: null, signal: null, error };
          resolve(this.exited);
        }
      });
      this.child.once('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    const readyPipe = command.signalsReady ? (this.child.stdio[3] as Readable | null) : null;
    this.ready = readyPipe
      ? new Promise((resolve) => {
          let partial = '';
          readyPipe.setEncoding('utf8');
          readyPipe.on('data', (text: string) => {
            const lines = (partial + text).split('\n');
            partial = lines.pop() ?? '';
            for (const line of lines) {
              if (line === 'ready') resolve(true);
              else if (line.startsWith('{')) this.noteProgress(line);
            }
          });
          readyPipe.on('error', () => resolve(false));
          readyPipe.on('close', () => resolve(false));
        })
      : undefined;
    // Writes to a stage that died fail with EPIPE; the exit handler deals with the death itself.
    this.child.stdin?.on('error', () => {});
    let partial = '';
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') options.stderrLine(line.replace(/\r$/, ''));
    });
    this.child.stderr?.on('end', () => {
      if (partial.trim() !== '') options.stderrLine(partial);
    });
  }

  private noteProgress(line: string): void {
    try {
      const progress = JSON.parse(line) as SinkProgress;
      if (typeof progress.in !== 'number' || typeof progress.at !== 'object') return;
      this.onProgress?.(progress);
    } catch {
      // Not a report: ignore it.
    }
  }

  get name(): string {
    return this.options.name;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get stdin(): Writable {
    return this.child.stdin as Writable;
  }

  get stdout(): Readable {
    return this.child.stdout as Readable;
  }

  get running(): boolean {
    return this.exited === undefined;
  }

  /**
   * Resolves once the process has started: a cqp component when it reports ready (options checked,
   * files open), any other program when it is still running after `graceMs`. Rejects when it failed to
   * start or exited first.
   */
  async started(graceMs: number, readyTimeoutMs = 30_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const wait = this.ready
      ? this.ready.then(async (ok) => (ok ? undefined : await this.exit))
      : new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), graceMs)));
    const timeout = new Promise<'timeout'>((resolve) => {
      if (this.ready) timer = setTimeout(() => resolve('timeout'), readyTimeoutMs);
    });
    const status = await Promise.race([this.exit, wait, timeout]);
    clearTimeout(timer);
    if (status === 'timeout') throw new CqpError('STAGE', `${this.name}: not ready after ${readyTimeoutMs / 1000} s`);
    if (status === undefined) return;
    const how = status.error
      ? `could not start ${[this.command.file, ...this.command.args].join(' ')}: ${messageOf(status.error)}`
      : `exited at once (${status.signal ? `signal ${status.signal}` : `code ${status.code}`})`;
    throw new CqpError('STAGE', `${this.name}: ${how}`);
  }

  /** Sends a signal, recording that the exit is expected. */
  stop(signal: NodeJS.Signals = 'SIGTERM', expected: ExpectedExit = 'stop'): void {
    this.expected ??= expected;
    if (signal === 'SIGKILL') this.expected = 'kill';
    if (this.running) this.child.kill(signal);
  }

  /** True when the process ended cleanly (exit code 0). */
  async clean(): Promise<boolean> {
    const status = await this.exit;
    return status.code === 0;
  }
}
