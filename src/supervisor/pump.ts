import type { Readable, Writable } from 'node:stream';
import { advance, splitStamp, type PositionMap } from '../core/position.js';
import type { CqpError } from '../core/errors.js';
import type { Barrier, Link } from './link.js';
import type { StageProcess } from './process.js';
import type { Rewritten } from './run-output.js';

/** Where a pump writes: a stream, and a counter of the lines it received. */
export interface PumpTarget {
  stream: Writable;
  /** The process whose stdin `stream` is (a link writes straight into it when it is a cqp process). */
  proc?: StageProcess;
  /** Called with the number of lines written to this target. */
  count?: (lines: number) => void;
  /** Called just before the pump ends the stream (its process is expected to exit then). */
  ending?: () => void;
}

export interface PumpOptions {
  /** End the targets when the input ends (false while a stretch of the pipeline is being drained). */
  endTargets: boolean;
  /** Called with the number of lines read from the input and forwarded. */
  count?: (lines: number) => void;
  /** Keep the last position stamped on forwarded lines, per source. */
  trackPositions?: boolean;
  /** Whether an unfinished last line may be forwarded (true when its producer exited cleanly). */
  cleanEnd?: () => Promise<boolean>;
  /** Told about an unfinished last line that was dropped. */
  warn?: (message: string) => void;
  /**
   * Checks and rewrites each run of whole lines before it goes on (a `run:` program's output). With an
   * error, the bytes before it go on, nothing after, and `failed` is told.
   */
  rewrite?: (lines: Buffer) => Rewritten;
  failed?: (error: CqpError) => void;
  /** For `cqp tap`: what to give each run of whole lines forwarded, while someone taps them (else undefined). */
  mirror?: () => ((text: string) => void) | undefined;
}

const NL = 10;
/**
 * How much a target may hold unwritten before the pump pauses its input (the streams' own mark is
 * 16 KiB, less than one read: pausing and resuming at every read costs more than the memory saved).
 */
const TARGET_BUFFER_BYTES = 256 * 1024;

function countLines(buf: Buffer): number {
  let n = 0;
  let at = buf.indexOf(NL);
  while (at >= 0) {
    n++;
    at = buf.indexOf(NL, at + 1);
  }
  return n;
}

/**
 * Moves NDJSON from one process's stdout to the stdin of others, whole lines only, so the supervisor can
 * stop it between two lines (`hold`), point it elsewhere (`retarget`) and go on (`release`). Backpressure
 * holds: when a target's buffer is full the input is paused until that target drains.
 */
export class Pump implements Link {
  /** Bytes read but not yet forwarded: at most one unfinished line, or more while held. */
  private pending: Buffer[] = [];
  private held = false;
  /** The barrier line to hold at (holdAt), and what to tell once it came. */
  private barrier: { line: Buffer; seen: () => void } | undefined;
  private ended = false;
  private finished = false;
  /** Set once the input has ended and the targets with it: targets given later are ended too. */
  private targetsEnded = false;
  /** A rewrite failed: what the input holds from there on is dropped. */
  private broken = false;
  private readonly blocked = new Set<Writable>();
  private targets: PumpTarget[];
  private resolveDone: () => void = () => {};
  /** Resolves when the input has ended and everything read has been forwarded. */
  readonly done: Promise<void>;
  /**
   * With `trackPositions`: the position of the last line of each write, per source. A source's lines
   * share one source id, so for the supervisor's source pump this is the last position forwarded.
   */
  readonly positions: PositionMap = {};
  endTargets: boolean;

  constructor(
    private readonly input: Readable,
    targets: PumpTarget[],
    private readonly options: PumpOptions,
  ) {
    this.targets = targets;
    this.endTargets = options.endTargets;
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    input.on('data', (chunk: Buffer) => {
      if (this.broken) return;
      this.pending.push(chunk);
      if (this.held) input.pause();
      else this.forward();
    });
    input.on('end', () => {
      this.ended = true;
      if (!this.held) void this.finish();
    });
    input.on('error', () => {
      this.ended = true;
      if (!this.held) void this.finish();
    });
  }

  /** Stops forwarding after the last whole line already sent; what arrives meanwhile waits. */
  hold(): Promise<void> {
    this.held = true;
    this.input.pause();
    return Promise.resolve();
  }

  /**
   * Holds where the barrier line comes out of the process: the lines before it are forwarded, the line
   * is dropped, what follows waits. The process passes the line on rather than cutting its output.
   */
  async holdAt(barrier: Barrier): Promise<void> {
    const seen = new Promise<void>((resolve) => (this.barrier = { line: Buffer.from(barrier.line), seen: resolve }));
    await barrier.send(false);
    await Promise.race([seen, this.done]);
  }

  /** Forwards what waited, and goes on. */
  release(): Promise<void> {
    this.resume();
    return Promise.resolve();
  }

  private resume(): void {
    if (!this.held) return;
    this.held = false;
    this.forward();
    if (this.ended) void this.finish();
    else if (this.blocked.size === 0) this.input.resume();
  }

  /** Points the pump at other targets (from the next line on). */
  retarget(targets: PumpTarget[]): void {
    this.targets = targets;
    this.blocked.clear();
    if (!this.held && !this.ended) this.input.resume();
    // Its producer has ended and its targets were ended: new ones (a reload rewiring after the producer
    // died) must not wait for more from it.
    if (this.targetsEnded) endTargets(targets);
  }

  get currentTargets(): readonly PumpTarget[] {
    return this.targets;
  }

  /** Writes whole lines, given as consecutive pieces (the end of one read and the start of the next). */
  private write(parts: Buffer[]): void {
    if (this.broken) return;
    if (this.options.rewrite) {
      const { bytes, error } = this.options.rewrite(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
      if (error) {
        this.broken = true;
        this.pending = [];
        this.input.resume();
        this.options.failed?.(error);
      }
      if (bytes.length === 0) return;
      parts = [bytes];
    }
    const mirror = this.options.mirror?.();
    if (mirror) mirror(parts.map((p) => p.toString('utf8')).join(''));
    let lines = 0;
    for (const part of parts) lines += countLines(part);
    this.options.count?.(lines);
    if (this.options.trackPositions) this.track(parts);
    for (const target of this.targets) {
      const stream = target.stream;
      if (stream.writableEnded || stream.destroyed) continue;
      target.count?.(lines);
      if (parts.length === 1) stream.write(parts[0] as Buffer);
      else {
        // One writev for the pieces, instead of copying them into one buffer first.
        stream.cork();
        for (const part of parts) stream.write(part);
        stream.uncork();
      }
      if (stream.writableLength >= TARGET_BUFFER_BYTES && !this.blocked.has(stream)) {
        this.blocked.add(stream);
        const unblock = (): void => {
          stream.off('drain', unblock);
          stream.off('close', unblock);
          if (!this.blocked.delete(stream)) return;
          if (this.blocked.size === 0 && !this.held && !this.ended) this.input.resume();
        };
        stream.on('drain', unblock);
        stream.on('close', unblock);
      }
    }
    // A broken pump reads on to the end, dropping what comes, so that its targets still end.
    if (this.blocked.size > 0 && !this.broken) this.input.pause();
  }

  private track(parts: Buffer[]): void {
    let region = parts[parts.length - 1] as Buffer;
    const end = region.length - 1;
    let start = region.lastIndexOf(NL, end - 1) + 1;
    if (start === 0 && parts.length > 1) {
      // The last line began in an earlier piece (rare: one line longer than a read).
      region = Buffer.concat(parts);
      start = region.lastIndexOf(NL, region.length - 2) + 1;
    }
    const { position } = splitStamp(region.toString('utf8', start, region.length - 1).replace(/\r$/, ''));
    if (position) advance(this.positions, position);
  }

  private forward(): void {
    // The last newline, in the latest piece that has one (after a hold, several pieces wait).
    let at = this.pending.length - 1;
    let last = -1;
    for (; at >= 0; at--) {
      last = (this.pending[at] as Buffer).lastIndexOf(NL);
      if (last >= 0) break;
    }
    if (at < 0) return;
    const piece = this.pending[at] as Buffer;
    const parts = this.pending.slice(0, at);
    parts.push(piece.subarray(0, last + 1));
    const rest = this.pending.slice(at + 1);
    if (last + 1 < piece.length) rest.unshift(piece.subarray(last + 1));
    this.pending = rest;
    if (this.barrier && this.holdsAt(parts)) return;
    this.write(parts);
  }

  /** When the barrier line is among `parts` (whole lines): forwards the lines before it, drops it, holds. */
  private holdsAt(parts: Buffer[]): boolean {
    const { line, seen } = this.barrier as NonNullable<Pump['barrier']>;
    const whole = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    const at = whole.indexOf(line);
    if (at < 0) return false;
    this.barrier = undefined;
    if (at > 0) this.write([whole.subarray(0, at)]);
    const after = whole.subarray(at + line.length);
    if (after.length > 0) this.pending.unshift(after);
    this.held = true;
    this.input.pause();
    seen();
    return true;
  }

  private async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.forward();
    const rest = this.pending.length > 0 ? Buffer.concat(this.pending) : undefined;
    this.pending = [];
    if (rest && rest.length > 0) {
      if (!this.options.cleanEnd || (await this.options.cleanEnd())) this.write([rest, Buffer.from('\n')]);
      else this.options.warn?.(`dropped an unfinished last line of ${rest.length} bytes from a process that did not exit cleanly`);
    }
    if (this.endTargets) {
      this.targetsEnded = true;
      endTargets(this.targets);
    }
    this.resolveDone();
  }
}

/** Ends the targets' input (after a clean end: no half-written last line reaches them). */
export function endTargets(targets: readonly PumpTarget[]): void {
  for (const target of targets) {
    target.ending?.();
    target.stream.end();
  }
}
