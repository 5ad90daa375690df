/**
 * Why a run ends with exit 1: components that failed for good. A failure is noted when a process of a
 * component exits with an error, and forgotten when a later process of the same component becomes ready
 * or ends cleanly: a crash the supervisor recovered from is no failure of the run, but a sink that
 * never opened its files, a component given up on, or a crash whose restart the end of the run cut
 * short is. A stage whose output cannot go on (`fatal`) stays failed.
 */
export class Failures {
  private readonly pending = new Map<string, string>();
  private readonly fatal = new Map<string, string>();

  /** A process of component `name` exited with an error, described by `message`. */
  crashed(name: string, message: string): void {
    this.pending.set(name, message);
  }

  /** A later process of component `name` became ready or ended cleanly. */
  recovered(name: string): void {
    this.pending.delete(name);
  }

  /** Component `name` stopped the pipeline: nothing that follows makes up for it. */
  stopped(name: string, message: string): void {
    this.fatal.set(name, message);
  }

  get any(): boolean {
    return this.pending.size + this.fatal.size > 0;
  }

  /** One line per failed component: `NAME: what happened`. */
  messages(): string[] {
    const out = new Map([...this.pending, ...this.fatal]);
    return [...out].map(([name, message]) => `${name}: ${message}`);
  }
}
