import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOCKED_BY_ANOTHER_WRITER } from '../log/lock.js';
import type { ExitStatus, StageProcess } from './process.js';

/** How long to wait for the last of a process's stderr after its exit (ms): the pipe may close later. */
const STDERR_END_MS = 1000;

/**
 * Why a process's exit is one no restart can mend, or undefined when a restart may help. A sink whose
 * log or database another writer holds (another `cqp run`, a replay, a standalone sink) is refused again
 * on every restart until that writer stops: the run stops at once, naming the holder's pid, rather than
 * restarting it until the crash limit. The sink says so in its last stderr line (the LOCKED message).
 */
export async function refusalOf(proc: StageProcess, status: ExitStatus): Promise<string | undefined> {
  if (status.code !== 1) return undefined;
  const stderr = proc.child.stderr;
  if (stderr && !stderr.readableEnded && !stderr.destroyed) await Promise.race([once(stderr, 'close'), sleep(STDERR_END_MS)]);
  if (!lockedOut(proc)) return undefined;
  const last = (proc.lastStderr ?? '').trim();
  return `${last.replace(/^cqp: /, '')} (${proc.name} is not restarted: it would be refused again)`;
}

/** Whether the process's last word was that another writer holds its store (starting it again is no use). */
export function lockedOut(proc: StageProcess): boolean {
  return proc.lastStderr?.includes(LOCKED_BY_ANOTHER_WRITER) === true;
}
