import type { ExitStatus, StageProcess } from './process.js';

/**
 * Why a process's exit is one no restart can mend, or undefined when a restart may help. A sink whose
 * log or database another writer holds (another `cqp run`, a replay, a standalone sink) is refused again
 * on every restart until that writer stops: the run stops at once, naming the holder's pid, rather than
 * restarting it until the crash limit. The sink says so before it exits (the `locked` message).
 */
export function refusalOf(proc: StageProcess, status: ExitStatus): string | undefined {
  if (status.code === 0 || proc.locked === undefined) return undefined;
  return `${proc.locked} (${proc.name} is not restarted: it would be refused again)`;
}

/** Whether the process said another writer holds its store (starting it again is no use). */
export function lockedOut(proc: StageProcess): boolean {
  return proc.locked !== undefined;
}
