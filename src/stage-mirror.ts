/**
 * A stage's side of `cqp tap`. Stages write straight into each other's pipes, so the supervisor never
 * sees their events; while (and only while) the supervisor says someone taps a component (`tap`, see
 * protocol.ts), the component mirrors what it writes and what its error policy rejects on the control
 * channel (`tapped`). Untapped, nothing is copied: the output's hook is unset and the policy's is a no-op.
 * The mirror never waits: when the channel still carries earlier copies, it leaves lines out and says
 * how many, so a slow tap never slows the stage.
 */
import { BARRIER_MARK, type ComponentMessage, type TappedError, type TapRequest } from './protocol.js';

/** Copies sent on the channel and not yet written out: more than this and lines are dropped. */
const MAX_PENDING_SENDS = 4;
/** A rejected line longer than this is cut (a tap shows it; it need not carry all of it). */
const MAX_ERROR_LINE = 1_000_000;

export class StageMirror {
  private request: TapRequest = { outputs: 0, errors: false };
  private pending = 0;
  private dropped = 0;
  /** Lines mirrored in all (reported with the counts: zero while nobody taps). */
  mirrored = 0;
  /** Lines mirrored in the current second, against `outputs` when it is a rate. */
  private windowStart = 0;
  private inWindow = 0;

  constructor(private readonly send: (message: ComponentMessage) => Promise<void>) {}

  /** Whether the output is to be mirrored at all; the output hook is set only while it is. */
  get outputs(): boolean {
    return this.request.outputs !== 0;
  }

  get errors(): boolean {
    return this.request.errors;
  }

  tap(request: TapRequest): void {
    this.request = request;
  }

  /** A chunk of whole lines the stage wrote (barrier lines left out). */
  output(text: string): void {
    const limit = this.request.outputs;
    if (limit === 0) return;
    const lines: string[] = [];
    let at = 0;
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    while (at < text.length) {
      let end = text.indexOf('\n', at);
      if (end < 0) end = text.length;
      if (limit !== 'all' && this.inWindow >= limit) break;
      const line = text.slice(at, end);
      at = end + 1;
      if (line === '' || line.startsWith(BARRIER_MARK)) continue;
      lines.push(line);
      this.inWindow++;
    }
    if (lines.length > 0) this.ship(lines, []);
  }

  /** An event the error policy rejected, and why. */
  rejected(reason: string, line: string): void {
    if (!this.request.errors) return;
    this.ship([], [{ reason, line: line.length > MAX_ERROR_LINE ? line.slice(0, MAX_ERROR_LINE) : line }]);
  }

  private ship(outputs: string[], errors: TappedError[]): void {
    if (this.pending >= MAX_PENDING_SENDS) {
      this.dropped += outputs.length + errors.length;
      return;
    }
    this.pending++;
    this.mirrored += outputs.length + errors.length;
    const dropped = this.dropped;
    this.dropped = 0;
    void this.send({ cqp: 'tapped', outputs, errors, dropped }).then(() => this.pending--);
  }
}
