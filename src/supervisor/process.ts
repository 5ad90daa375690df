import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { CqpError, messageOf } from '../core/errors.js';
import { barrierLine, componentMessage, messageLine, readMessages, type ComponentMessage, type Progress, type Reply, type SupervisorMessage } from '../protocol.js';
import type { Command } from './plan.js';

/** How long after a process's exit its control channel may stay open before the exit counts anyway (ms). */
const CHANNEL_CLOSE_MS = 2000;

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
  /**
   * Open the control channel (a cqp component only): the process then reports its counts and can be cut
   * and handed a new output (see stage-control.ts).
   */
  control?: boolean;
  /** Write straight into this stream's pipe (the next process's stdin) instead of a pipe to the supervisor. */
  stdout?: Writable;
}

/** One running stage, source, sink or helper process of a pipeline. */
export class StageProcess {
  readonly child: ChildProcess;
  readonly exit: Promise<ExitStatus>;
  /** For cqp components: resolves true when the process reported it is ready, false when it never will. */
  readonly ready: Promise<boolean> | undefined;
  /** True once a cqp component has reported it is ready (its options checked, its files open). */
  wasReady = false;
  /** When it was spawned, and how long it then ran (ms; undefined until it exits). */
  private readonly spawnedAt = Date.now();
  ranMs: number | undefined;
  expected: ExpectedExit;
  exited: ExitStatus | undefined;
  /** The process has a control channel (see SpawnOptions.control). */
  readonly controlled: boolean;
  /** Its last progress report (on either transport), and a listener for each. */
  reported: Progress = { in: 0, out: 0, errors: 0, at: {} };
  onReport: ((report: Progress) => void) | undefined;
  /** A source reading its share of a group's input: asked where the sinks stand (question `id`), and told what it holds. */
  onAsk: ((id: string) => void) | undefined;
  onHolding: ((group: string, partitions: number[]) => void) | undefined;
  /** Given what it mirrors while tapped (`cqp tap`). */
  onTapped: ((message: Extract<ComponentMessage, { cqp: 'tapped' }>) => void) | undefined;
  /** It said its output was closed under it (the process it wrote into exited): its exit 0 that follows is no crash. */
  outputClosed = false;
  /** What it said when it was refused its log or database because another writer holds it. */
  locked: string | undefined;
  private readonly replies = new Map<Reply, () => void>();
  private readyNow: (ready: boolean) => void = () => {};
  /** The last message it wrote to stderr (what it said before it failed). */
  lastStderr: string | undefined;

  constructor(
    readonly command: Command,
    readonly options: SpawnOptions,
  ) {
    const stdio: Array<'inherit' | 'pipe' | 'ipc' | Writable> = [options.inheritStdin ? 'inherit' : 'pipe', options.stdout ?? (options.inheritStdout ? 'inherit' : 'pipe'), 'pipe'];
    if (command.signalsReady) stdio.push('pipe');
    this.controlled = command.signalsReady === true && options.control === true;
    if (this.controlled) stdio.push('ipc');
    this.child = spawn(command.file, command.args, {
      cwd: options.cwd,
      stdio,
      // CQP_SUPERVISOR_PID: a writer refused by this stage's lock after this supervisor died knows the stage
      // is an orphan on its way out, and waits for it (see acquireLock).
      env: command.signalsReady ? { ...process.env, CQP_READY_FD: '3', CQP_SUPERVISOR_PID: String(process.pid) } : process.env,
      // Its own process group: Ctrl-C on a terminal reaches the supervisor only, which then stops the
      // source and drains the stages in order (a stage that got SIGINT itself would stop reading mid-pipe).
      detached: true,
    });
    const readyPipe = command.signalsReady ? (this.child.stdio[3] as Readable | null) : null;
    this.exit = new Promise((resolve) => {
      this.child.once('error', (error) => {
        // A spawn failure emits 'error' and may never emit 'exit'.
        if (this.child.pid === undefined) {
          this.exited = { code: null, signal: null, error };
          resolve(this.exited);
        }
      });
      // Its last messages are in once its channels have closed too (or soon after the exit: a program the
      // stage started may still hold them open).
      const closed = (): Promise<unknown> => new Promise((done) => this.child.once('exit', () => setTimeout(done, CHANNEL_CLOSE_MS).unref()));
      const channelClosed = this.controlled && this.child.connected ? Promise.race([new Promise((done) => this.child.once('disconnect', done)), closed()]) : undefined;
      const pipeClosed = readyPipe && !readyPipe.destroyed ? Promise.race([new Promise((done) => readyPipe.once('close', done)), closed()]) : undefined;
      this.child.once('exit', (code, signal) => {
        this.ranMs = Date.now() - this.spawnedAt;
        const status = { code, signal };
        void Promise.all([channelClosed, pipeClosed]).then(() => {
          this.exited = status;
          resolve(status);
        });
      });
    });
    if (this.controlled) {
      this.child.on('message', (value: unknown) => {
        const message = componentMessage(value);
        if (message) this.receive(message);
      });
      // A process that exits or closes the channel answers nothing more.
      this.child.on('error', () => {});
    }
    this.ready = readyPipe
      ? new Promise((resolve) => {
          this.readyNow = resolve;
          readMessages(readyPipe, componentMessage, (message) => this.receive(message));
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
      for (const line of lines) if (line.trim() !== '') this.noteStderr(line.replace(/\r$/, ''));
    });
    this.child.stderr?.on('end', () => {
      if (partial.trim() !== '') this.noteStderr(partial);
    });
  }

  private noteStderr(line: string): void {
    // An indented line continues the message before it (the bad line under `stdin:N: …`).
    if (!/^\s/.test(line) || this.lastStderr === undefined) this.lastStderr = line;
    this.options.stderrLine(line);
  }

  /** How it ended, with the last thing it said: `exited with code 1: cqp: cannot open …`. */
  describeExit(status: ExitStatus): string {
    if (status.error) return `could not start ${[this.command.file, ...this.command.args].join(' ')}: ${messageOf(status.error)}`;
    const how = `exited with ${status.signal ? `signal ${status.signal}` : `code ${status.code}`}`;
    return this.lastStderr === undefined ? how : `${how}: ${this.lastStderr.trim()}`;
  }

  /** One message from the process, on either transport. */
  private receive(message: ComponentMessage): void {
    switch (message.cqp) {
      case 'ready':
        this.wasReady = true;
        this.readyNow(true);
        return;
      case 'progress':
        this.reported = { in: message.in, out: message.out, errors: message.errors, at: message.at, mirrored: message.mirrored ?? 0, activity: message.activity };
        this.onReport?.(this.reported);
        return;
      case 'output-closed':
        this.outputClosed = true;
        return;
      case 'tapped':
        this.onTapped?.(message);
        return;
      case 'locked':
        this.locked = message.message;
        return;
      case 'sinks-at':
        this.onAsk?.(message.id);
        return;
      case 'holding':
        this.onHolding?.(message.group, message.partitions);
        return;
      case 'cut':
      case 'ack':
        this.replies.get(message.cqp)?.();
        this.replies.delete(message.cqp);
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

  /** Its stdout, or null when it writes straight into the next process (SpawnOptions.stdout). */
  get stdout(): Readable | null {
    return this.child.stdout;
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
      : `exited at once (${status.signal ? `signal ${status.signal}` : `code ${status.code}`})${this.lastStderr === undefined ? '' : `: ${this.lastStderr.trim()}`}`;
    throw new CqpError('STAGE', `${this.name}: ${how}`);
  }

  /**
   * Sends a control message (with a socket to hand over; `keepOpen`: the supervisor keeps its copy) and, with
   * `reply`, resolves once the process answers so or has exited.
   */
  async request(message: SupervisorMessage, reply?: Reply, handle?: Writable, keepOpen = true): Promise<void> {
    if (!this.controlled || !this.child.connected) return;
    const answered = reply ? this.answer(reply) : undefined;
    try {
      this.child.send(message, handle as never, { keepOpen });
    } catch {
      return;
    }
    await answered;
  }

  /** Resolves once the process answers `reply`, or has exited. */
  private answer(reply: Reply): Promise<unknown> {
    return Promise.race([new Promise<void>((resolve) => this.replies.set(reply, resolve)), this.exit]);
  }

  /**
   * Writes the barrier line `id` into the process's input, once the process is armed for it (the
   * `barrier` message; `cut`: its output cuts there). With `cut`, resolves once the output has cut at the
   * line (or the process has exited); otherwise once the line is handed to the input.
   */
  async barrier(id: string, cut: boolean): Promise<void> {
    await this.request({ cqp: 'barrier', id, cut }, 'ack');
    if (!this.running || !this.child.connected) return;
    const answered = cut ? this.answer('cut') : undefined;
    this.stdin.write(barrierLine(id));
    await answered;
  }

  /** Writes one message to a cqp component on its CQP_READY_FD pipe (a sink reading a log listens there). */
  tell(message: SupervisorMessage): void {
    const pipe = this.child.stdio[3] as Writable | null | undefined;
    if (pipe && !pipe.destroyed && pipe.writable) pipe.write(messageLine(message));
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
