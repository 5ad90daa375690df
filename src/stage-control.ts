/**
 * A stage's side of `cqp run`'s control channel (Node IPC, present only under the supervisor). With it,
 * consecutive cqp stages write straight into each other's pipes instead of through the supervisor, and
 * the supervisor can still swap a stage between two lines:
 *
 * - `cut`: stop writing after the last whole line already written, flush, let go of the output, answer
 *   `cut`. Lines produced meanwhile wait (and the input with them, by backpressure).
 * - `output` (with a socket): write there from now on.
 * - `barrier`: the supervisor writes a barrier line into the input next; it goes through the stage to
 *   the output at its place among the lines, where the output cuts as for `cut` (and answers `cut` with
 *   its id), or, for a supervisor pumping the output, goes on for the pump to find. The cut is then
 *   exact: the output of every line before the barrier went to the old output, nothing after.
 * - `upstream-lost`: the process feeding this one died; an unfinished last line at the end of the input
 *   is its half-written line, dropped rather than read. Answered with `ack`.
 *
 * - `tap`: mirror what it writes and what its error policy rejects, while someone taps it (stage-mirror.ts).
 *
 * The stage reports its progress (protocol.ts) as it goes and at its end: the supervisor's counts, the
 * events its error policy handled, and for a source the last position written (where it resumes when
 * no sink holds positions).
 * Unchanged counts are sent again about once a second, so a stage that falls silent is one that is
 * stopped or hung (shown as stalled), not one that is merely idle.
 */
import { Writable } from 'node:stream';
import type { Socket } from 'node:net';
import type { StageCounts } from './core/runtime.js';
import type { WorkerLink } from './core/component.js';
import type { PositionMap } from './core/position.js';
import { CqpError } from './core/errors.js';
import { BARRIER_MARK, barrierLine, supervisorMessage, type ComponentMessage } from './protocol.js';
import { StageMirror } from './stage-mirror.js';

/** How often a stage reports its counts (ms) when they moved. */
const REPORT_MS = 250;
/** Unchanged counts are reported again every this many ticks: the supervisor's sign that the stage lives. */
const HEARTBEAT_TICKS = 4;

type Write = () => void;

/** A barrier line the output cuts at, and what to do once it has. */
interface ArmedCut {
  line: string;
  cut: () => void;
}

/**
 * The output of a stage under the supervisor: stdout (a pipe into the next stage, or to the supervisor)
 * until a cut, then whatever socket the supervisor hands over. Writes wait while there is none.
 */
export class SwitchableOutput extends Writable {
  private target: Writable | undefined;
  /** A write waiting for a target (after a cut). */
  private waiting: Write | undefined;
  private targetWaiters: Array<() => void> = [];
  /** Writes handed to the target whose callback has not come yet. */
  private unflushed = 0;
  private flushWaiters: Array<() => void> = [];
  private failure: Error | undefined;
  private barrier: ArmedCut | undefined;
  /** Set only while the output is tapped (stage-mirror.ts): given each chunk written. */
  mirror: ((text: string) => void) | undefined;
  private readonly onTargetError = (error: Error): void => {
    this.failure ??= error;
  };

  constructor(initial: Writable) {
    super({ decodeStrings: false });
    this.attach(initial);
  }

  /** True between a cut and the next target. */
  get cutOff(): boolean {
    return this.target === undefined;
  }

  private attach(target: Writable): void {
    this.target = target;
    target.on('error', this.onTargetError);
    const waiters = this.targetWaiters;
    this.targetWaiters = [];
    for (const w of waiters) w();
    const write = this.waiting;
    this.waiting = undefined;
    write?.();
  }

  override _write(chunk: string | Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.mirror) this.mirror(typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
    const go = (): void => this.send(chunk, encoding, callback);
    if (this.target) go();
    else this.waiting = go;
  }

  private send(chunk: string | Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.failure) {
      callback(this.failure);
      return;
    }
    const target = this.target as Writable;
    if (this.barrier) {
      const text = typeof chunk === 'string' ? chunk : chunk.toString('utf8');
      const at = text.indexOf(this.barrier.line);
      if (at >= 0) {
        this.cutAt(text, at, encoding, callback);
        return;
      }
    }
    const ok = this.put(target, chunk, encoding);
    if (ok) {
      callback();
      return;
    }
    // Full: the next write waits until the target drains (or fails).
    const done = (): void => {
      target.off('drain', done);
      target.off('close', done);
      callback(this.failure);
    };
    target.on('drain', done);
    target.on('close', done);
  }

  /** Hands a chunk to the target, counted until its callback comes; false when the target is full. */
  private put(target: Writable, chunk: string | Buffer, encoding: BufferEncoding): boolean {
    this.unflushed++;
    return target.write(chunk, encoding, (error) => {
      if (error) this.failure ??= error;
      if (--this.unflushed === 0) for (const w of this.flushWaiters.splice(0)) w();
    });
  }

  /**
   * The armed barrier line is in `text` at `at`: what comes before it goes to the target, then the
   * output is cut there (the line itself dropped), and what follows waits for the next target.
   */
  private cutAt(text: string, at: number, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const { line, cut } = this.barrier as ArmedCut;
    this.barrier = undefined;
    if (at > 0) this.put(this.target as Writable, text.slice(0, at), encoding);
    const after = text.slice(at + line.length);
    void this.cut().then(cut);
    if (after === '') callback();
    else this.waiting = () => this.send(after, encoding, callback);
  }

  /**
   * Cuts the output where the barrier line `line` (with its newline) comes through it, as `cut` does,
   * then calls `cut`. Only while armed is what is written searched.
   */
  armCut(line: string, cut: () => void): void {
    this.barrier = { line, cut };
  }

  private async flushed(): Promise<void> {
    if (this.unflushed > 0) await new Promise<void>((resolve) => this.flushWaiters.push(resolve));
  }

  /** Stops after what was written, flushes it and lets the output go (closing a socket handed over). */
  async cut(): Promise<void> {
    const target = this.target;
    if (!target) return;
    this.target = undefined;
    await this.flushed();
    target.off('error', this.onTargetError);
    // Stdout stays open (the supervisor ends its end of that pipe); a socket handed over is closed.
    if (target !== process.stdout) target.destroy();
  }

  /** Writes go to `socket` from now on. */
  connect(socket: Socket): void {
    socket.on('error', () => {});
    this.attach(socket);
  }

  override _final(callback: (error?: Error | null) => void): void {
    void this.finish().then(() => callback(this.failure), callback);
  }

  private async finish(): Promise<void> {
    if (!this.target) await new Promise<void>((resolve) => this.targetWaiters.push(resolve));
    await this.flushed();
    // Closed, not shut down: the supervisor holds the other copy and decides when the next stage's input ends.
    if (this.target !== process.stdout) this.target?.destroy();
  }
}

/** Sends one message on the control channel while it is open; resolves once it is written (or cannot be). */
export function sendToSupervisor(message: ComponentMessage): Promise<void> {
  return new Promise((resolve) => {
    if (typeof process.send !== 'function' || !process.connected) {
      resolve();
      return;
    }
    try {
      process.send(message, undefined, {}, () => resolve());
    } catch {
      resolve();
    }
  });
}

/**
 * Says, under `cqp run`, that this process's output was closed under it (the process it wrote into has
 * exited, as a `stdout` sink does after `| head -1`): its own exit that follows is no crash, and what
 * it means is for the supervisor to learn from the exit of that downstream process. Without a control
 * channel it does nothing.
 */
export function outputClosed(): Promise<void> {
  return sendToSupervisor({ cqp: 'output-closed' });
}

/**
 * The barrier lines of a stage's input (see `barrier` above). `pass` is given each line that starts
 * like one (the record separator): true for the barrier line the stage is armed for (it then goes to
 * the output as it is, uncounted, and the stage is no longer armed); false for a line that is no
 * barrier line (read as any other). A barrier line the stage was not armed for throws: a barrier
 * out of place must not turn into a bad event.
 */
export interface BarrierWatch {
  pass(text: string): boolean;
}

export interface StageControl {
  output: SwitchableOutput | undefined;
  counts: StageCounts;
  barrier: BarrierWatch;
  /** What it mirrors for `cqp tap` (its error policy tells it what it rejects). */
  mirror: StageMirror;
  /** True once the supervisor said the process feeding this one died. */
  upstreamLost: () => boolean;
  /** What a source reading its share of a group's input asks of and tells the supervisor. */
  worker: WorkerLink;
  /** Sends the last report and lets the channel go (the process may then exit). */
  close: () => Promise<void>;
}

/** How long a question to the supervisor waits for its answer. */
const ASK_TIMEOUT_MS = 30_000;

/**
 * The control channel, when this process runs under `cqp run` (a Node IPC channel is open); undefined
 * otherwise. `writes` is false for sinks (they only count and hear about a lost upstream). A source
 * stops (`stop`) when the supervisor is gone, so a pipeline whose supervisor was killed drains and ends;
 * a supervisor killed while the stage was still loading counts as gone too.
 */
export function stageControl(writes: boolean, isSource: boolean, stop: () => void): StageControl | undefined {
  // `process.send` exists only when the process was started with a channel; `connected` says whether it
  // is still open. Node may have seen it close before this code was loaded (no event left to wait for).
  if (typeof process.send !== 'function') return undefined;
  const counts: StageCounts = { in: 0, out: 0, errors: 0, at: undefined };
  const output = writes ? new SwitchableOutput(process.stdout) : undefined;
  let lost = false;
  const mirror = new StageMirror(sendToSupervisor);
  /** The barrier line armed for, without its newline. */
  let armed: string | undefined;
  const barrier: BarrierWatch = {
    pass(text) {
      if (!text.startsWith(BARRIER_MARK)) return false;
      if (text !== armed) throw new CqpError('STAGE', `a barrier line (${JSON.stringify(text)}) that cqp run did not announce reached the input`);
      armed = undefined;
      return true;
    },
  };
  const asked = new Map<string, (at: PositionMap | undefined) => void>();
  let questions = 0;
  const worker: WorkerLink = {
    sinksAt: () =>
      new Promise((resolve, reject) => {
        const id = String(++questions);
        const timer = setTimeout(() => {
          asked.delete(id);
          reject(new CqpError('STAGE', 'cqp run did not say where the sinks stand'));
        }, ASK_TIMEOUT_MS);
        asked.set(id, (at) => {
          clearTimeout(timer);
          resolve(at);
        });
        void sendToSupervisor({ cqp: 'sinks-at', id });
      }),
    holding: (group, partitions) => void sendToSupervisor({ cqp: 'holding', group, partitions }),
  };
  let last = '';
  let ticks = 0;
  const report = (heartbeat = false): Promise<void> => {
    const message: ComponentMessage = { cqp: 'progress', in: counts.in, out: counts.out, errors: counts.errors, at: counts.at ?? {}, mirrored: mirror.mirrored };
    const text = JSON.stringify(message);
    if (text === last && !(heartbeat && ++ticks % HEARTBEAT_TICKS === 0)) return Promise.resolve();
    last = text;
    return sendToSupervisor(message);
  };
  const onMessage = (value: unknown, handle: unknown): void => {
    const message = supervisorMessage(value);
    if (message?.cqp === 'cut') {
      // A sink has no output to cut: it answers at once.
      void (output?.cut() ?? Promise.resolve()).then(async () => {
        await report();
        await sendToSupervisor({ cqp: 'cut' });
      });
    } else if (message?.cqp === 'barrier') {
      const line = barrierLine(message.id);
      armed = line.slice(0, -1);
      if (message.cut) {
        output?.armCut(line, () => {
          void report().then(() => sendToSupervisor({ cqp: 'cut', id: message.id }));
        });
      }
      void sendToSupervisor({ cqp: 'ack' });
    } else if (message?.cqp === 'output' && output && handle) {
      output.connect(handle as Socket);
    } else if (message?.cqp === 'tap') {
      mirror.tap(message);
      if (output) output.mirror = mirror.outputs ? (text) => mirror.output(text) : undefined;
    } else if (message?.cqp === 'sinks-at') {
      const answer = asked.get(message.id);
      asked.delete(message.id);
      answer?.(message.at ?? undefined);
    } else if (message?.cqp === 'upstream-lost') {
      lost = true;
      void sendToSupervisor({ cqp: 'ack' });
    }
  };
  let gone = false;
  const onDisconnect = (): void => {
    if (gone) return;
    gone = true;
    if (isSource) stop();
    // Cut off with no supervisor left to hand over an output: nothing more can go anywhere.
    else if (output?.cutOff) process.exit(1);
  };
  process.on('message', onMessage);
  process.on('disconnect', onDisconnect);
  if (!process.connected) onDisconnect();
  const ticker = setInterval(() => void report(true), REPORT_MS);
  ticker.unref();
  return {
    output,
    counts,
    barrier,
    mirror,
    worker,
    upstreamLost: () => lost,
    close: async () => {
      clearInterval(ticker);
      await report();
      process.off('message', onMessage);
      process.off('disconnect', onDisconnect);
      if (process.connected) process.disconnect();
    },
  };
}
