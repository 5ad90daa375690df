import type { ExitStatus, StageProcess } from './process.js';

/**
 * True when a process refused its configuration at start, which no restart can mend: a program that
 * could not be started at all (not found, not executable), a cqp component that exited 2 (a usage or
 * configuration error: a views file, schema, module or expression it refused) before it was ready, or
 * a `run:` program that exited 2 (the usage-error convention, as argparse's) within `graceMs` of its
 * start, the same "exited at once" for which a reload refuses it.
 */
export function isConfigurationExit(proc: Pick<StageProcess, 'command' | 'wasReady' | 'ranMs'>, status: ExitStatus, graceMs: number): boolean {
  if (status.error) return true;
  if (status.code !== 2) return false;
  if (proc.command.signalsReady === true) return !proc.wasReady;
  return proc.ranMs !== undefined && proc.ranMs < graceMs;
}

/**
 * Why a run ends with exit 1 (or 2, for a configuration error): components that failed for good. A failure is noted when a process of a
 * component exits with an error, and forgotten when a later process of the same component becomes ready
 * or ends cleanly: a crash the supervisor recovered from is no failure of the run, but a sink that
 * never opened its files, a component given up on, or a crash whose restart the end of the run cut
 * short is. A stage whose output cannot go on (`fatal`) stays failed.
 */
export class Failures {
  private readonly pending = new Map<string, string>();
  private readonly fatal = new Map<string, string>();
  private readonly misconfigured = new Map<string, string>();

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

  /** Component `name` refused its configuration at start (isConfigurationExit): it is not restarted. */
  refusedConfiguration(name: string, message: string): void {
    this.misconfigured.set(name, message);
  }

  /** True when component `name` refused its configuration: nothing should start it again. */
  isMisconfigured(name: string): boolean {
    return this.misconfigured.has(name);
  }

  get any(): boolean {
    return this.pending.size + this.fatal.size + this.misconfigured.size > 0;
  }

  /** The run's exit code, given the one its end would have had: 2 after a configuration error, 1 after a failure. */
  exitCode(code: number): number {
    if (this.misconfigured.size > 0) return 2;
    return code === 0 && this.any ? 1 : code;
  }

  /** One line per failed component: `NAME: what happened`. */
  messages(): string[] {
    const out = new Map([...this.pending, ...this.fatal, ...this.misconfigured]);
    return [...out].map(([name, message]) => `${name}: ${message}`);
  }
}
