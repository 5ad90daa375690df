import { existsSync, linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { CqpError } from '../core/errors.js';

/** A held writer lock; `release()` is idempotent and also runs when the process exits. */
export interface LogLock {
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed writer whose parent has not reaped it yet is a zombie: it holds nothing any more.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // No /proc here (not Linux), or the process has just gone.
    return !existsSync('/proc/self/stat');
  }
}

function readPid(lockPath: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lockPath, 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the single-writer lock `<logPath>.lock`, a file holding the owner's pid. It is created
 * complete (written to a temp file, then hard-linked into place, which fails if it exists), so a
 * reader never sees it empty. A lock whose pid is no longer running is stale and taken over.
 */
export function acquireLock(logPath: string, warn: (message: string) => void, what = 'events.log'): LogLock {
  const lockPath = `${logPath}.lock`;
  const tmp = `${lockPath}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, lockPath);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new CqpError('IO', `${lockPath}: cannot create the writer lock (${(error as Error).message}); check that the folder is writable`, { cause: error });
        }
      }
      const pid = readPid(lockPath);
      if (pid !== undefined && alive(pid)) {
        throw new CqpError(
          'LOCKED',
          `${what} is locked by another writer (pid ${pid}): ${logPath} takes one writer at a time; stop that process, ` +
            `or if no writer is running, remove ${lockPath}`,
        );
      }
      if (attempt >= 2) {
        throw new CqpError('LOCKED', `${what}: could not take over the stale lock ${lockPath}; remove it if no writer is running`);
      }
      // Take over only the stale lock we looked at, not one another process has just created.
      if (readPid(lockPath) === pid) {
        warn(`${logPath}: taking over a stale writer lock (pid ${pid ?? 'unknown'} is not running)`);
        try {
          unlinkSync(lockPath);
        } catch {
          // Someone else removed it first; try again.
        }
      }
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone.
    }
  }
  let held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    process.off('exit', release);
    if (readPid(lockPath) === process.pid) {
      try {
        unlinkSync(lockPath);
      } catch {
        // Already gone.
      }
    }
  };
  process.on('exit', release);
  return { release };
}
