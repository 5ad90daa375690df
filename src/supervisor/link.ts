/**
 * The connection from one process's output to the next processes' input, which the supervisor can stop
 * between two lines, point elsewhere and start again. Two kinds:
 *
 * - a `Pump` (pump.ts): the supervisor reads the output and writes it on, for `run:` programs and for
 *   output that fans out to several processes;
 * - a `DirectLink`: a cqp stage writes straight into the next cqp process's stdin, as in a shell pipe,
 *   and the supervisor only steers it through the control channel (stage-control.ts): it cuts the stage
 *   at a line boundary and hands it its next output.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PositionMap } from '../core/position.js';
import type { StageProcess } from './process.js';
import { endTargets, Pump, type PumpOptions, type PumpTarget } from './pump.js';

/**
 * A barrier line for `Link.holdAt`, and how to send it: arm the process and write the line into its
 * input (`cut`: the process cuts its own output at the line; otherwise the line comes out for a pump).
 */
export interface Barrier {
  line: string;
  send(cut: boolean): Promise<void>;
}

export interface Link {
  /** Stops the flow after the last whole line sent; resolves once nothing more goes out. */
  hold(): Promise<void>;
  /**
   * Stops the flow exactly where a barrier line, written into the process's input once nothing more
   * comes into it, comes out: everything the process wrote for its input before the line goes out,
   * nothing after. Resolves once held there (or the process has exited). Released as after `hold`.
   */
  holdAt(barrier: Barrier): Promise<void>;
  /** Goes on, into the current targets. */
  release(): Promise<void>;
  /** Points the link at other targets (while held: from the release on). */
  retarget(targets: PumpTarget[]): void;
  readonly currentTargets: readonly PumpTarget[];
  /** End the targets' input when the output ends (false while a stretch of the pipeline is swapped). */
  endTargets: boolean;
  /** Resolves when the output has ended and everything in it has reached the targets. */
  readonly done: Promise<void>;
  /** For a source: the last position forwarded, per source id. */
  readonly positions: PositionMap;
}

/** The stdin to write straight into, when the targets are one process that takes the control channel. */
export function directTarget(targets: readonly PumpTarget[]): PumpTarget | undefined {
  const [only] = targets;
  return targets.length === 1 && only?.proc?.controlled ? only : undefined;
}

/** Two connected sockets (Node has no socketpair): one to hand to a process, one to pump from. */
export async function socketPair(): Promise<[Socket, Socket]> {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-link-'));
  const server = createServer();
  try {
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    server.listen(join(dir, 's'));
    await once(server, 'listening');
    const client = createConnection(join(dir, 's'));
    await once(client, 'connect');
    const [peer] = await accepted;
    return [client, peer];
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A cqp stage writing straight into the next process. While the targets are one cqp process, the stage
 * has that process's stdin (the supervisor keeps a copy, so the input ends only when the supervisor says);
 * otherwise it writes into a socket the supervisor pumps from.
 */
export class DirectLink implements Link {
  private targets: PumpTarget[];
  private inner: Pump | undefined;
  private held = false;
  private released: Promise<void> = Promise.resolve();
  private release_: () => void = () => {};
  private ending = true;
  /** Set once the output has ended into the targets: targets given later are ended too. */
  private ended: 'clean' | 'lost' | undefined;
  readonly done: Promise<void>;

  constructor(
    private readonly proc: StageProcess,
    targets: PumpTarget[],
    private readonly pumpOptions: Omit<PumpOptions, 'endTargets'>,
  ) {
    this.targets = targets;
    if (!directTarget(targets)) throw new Error('DirectLink: the process writes into a pipe of the supervisor');
    this.done = this.finish();
  }

  get endTargets(): boolean {
    return this.ending;
  }

  set endTargets(value: boolean) {
    this.ending = value;
    if (this.inner) this.inner.endTargets = value;
  }

  get currentTargets(): readonly PumpTarget[] {
    return this.targets;
  }

  get positions(): PositionMap {
    return this.proc.reported.at;
  }

  private async finish(): Promise<void> {
    const status = await this.proc.exit;
    // A hold in progress decides where the output goes next: end those targets, after the release.
    for (;;) {
      const waiting = this.released;
      await waiting;
      if (this.inner) await this.inner.done;
      if (waiting === this.released && !this.held) break;
    }
    if (this.inner || !this.ending) return;
    this.ended = status.code === 0 ? 'clean' : 'lost';
    await endAll(this.targets, this.ended);
  }

  hold(): Promise<void> {
    return this.stop(() => this.proc.request({ cqp: 'cut' }, 'cut'));
  }

  holdAt(barrier: Barrier): Promise<void> {
    return this.stop(() => barrier.send(true));
  }

  /** Held from now on: the process is cut by `cut`, then what it wrote into a socket is forwarded. */
  private async stop(cut: () => Promise<void>): Promise<void> {
    if (this.held) return;
    this.held = true;
    this.released = new Promise((resolve) => (this.release_ = resolve));
    await cut();
    if (this.inner) {
      // It closed the socket: what it wrote before the cut is forwarded, then the pump ends.
      this.inner.endTargets = false;
      await this.inner.done;
      this.inner = undefined;
    }
  }

  async release(): Promise<void> {
    if (!this.held) return;
    if (this.proc.running) {
      const direct = directTarget(this.targets);
      if (direct) {
        await this.proc.request({ cqp: 'output' }, undefined, direct.stream);
      } else {
        const [theirs, ours] = await socketPair();
        this.inner = new Pump(ours, this.targets, { ...this.pumpOptions, endTargets: this.ending });
        // Handed over, not kept: once the process closes it, the pump sees the end.
        await this.proc.request({ cqp: 'output' }, undefined, theirs, false);
      }
    }
    this.held = false;
    this.release_();
  }

  retarget(targets: PumpTarget[]): void {
    this.targets = targets;
    if (!this.held) this.inner?.retarget(targets);
    // A stage that died before a reload rewired it: its new downstream must not wait for it.
    if (this.ended) void endAll(targets, this.ended);
  }
}

/** Ends the targets' input; after an unclean end their last line may be half-written, which they drop. */
async function endAll(targets: readonly PumpTarget[], how: 'clean' | 'lost'): Promise<void> {
  if (how === 'lost') for (const target of targets) await target.proc?.request({ cqp: 'upstream-lost' }, 'ack');
  endTargets(targets);
}
