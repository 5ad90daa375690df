import { closeSync, fstatSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import { CqpError, messageOf } from '../core/errors.js';
import { processAlive } from '../core/pid.js';

/** A held writer lock; `release()` is idempotent, and the OS drops the lock when the process ends. */
export interface WriterLock {
  release(): void;
}

/** The part of the `fs-ext` addon used here: flock(2). */
interface Flock {
  flockSync(fd: number, flags: 'exnb' | 'un'): void;
}

let flock: Flock | undefined;

/** fs-ext is a native addon: it loads only when a writer starts, never with a plain filter. */
function loadFlock(): Flock {
  flock ??= createRequire(import.meta.url)('fs-ext') as Flock;
  return flock;
}

/** The pid holding a flock on the file open as `fd`, from the kernel's table (Linux; not across pid namespaces). */
function lockHolder(fd: number): number | undefined {
  try {
    const { dev, ino } = fstatSync(fd);
    const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
    for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields[1] === 'FLOCK' && fields[5] === id && fields[4] !== '0') return Number(fields[4]);
    }
  } catch {
    // Not Linux.
  }
  return undefined;
}

/**
 * The holder's pid, for the message only: the kernel's table of locks names it (0 when the holder is in
 * another pid namespace), else the pid the holder wrote to `PATH.lock`.
 */
function holderPid(fd: number, pidPath: string): string {
  const holder = lockHolder(fd);
  if (holder !== undefined) return `pid ${holder}`;
  try {
    const pid = Number.parseInt(readFileSync(pidPath, 'utf8'), 10);
    if (Number.isSafeInteger(pid) && pid > 0) return `pid ${pid}`;
  } catch {
    // Missing (removed by hand): the holder is still the holder.
  }
  return 'pid unknown';
}

const LOCKED_BY_ANOTHER_WRITER = 'is locked by another writer';

/** How long a writer waits for a holder that is a stage of a `cqp run` that died (it stops by itself). */
const ORPHAN_WAIT_MS = 30_000;


/**
 * Whether `pid` is a stage whose `cqp run` is gone (killed with -9, say): such a stage drains what it
 * was given and exits by itself, so a writer started meanwhile (the `cqp run` started again) waits for
 * it rather than failing. Its supervisor's pid is in its environment (CQP_SUPERVISOR_PID).
 */
function orphanedStage(pid: number): boolean {
  try {
    const entry = readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .find((e) => e.startsWith('CQP_SUPERVISOR_PID='));
    const supervisor = Number(entry?.slice('CQP_SUPERVISOR_PID='.length));
    return Number.isSafeInteger(supervisor) && supervisor > 0 && !processAlive(supervisor);
  } catch {
    return false;
  }
}

/** Blocks the thread for `ms` (a writer that waits for its lock has nothing else to do). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function lockedError(fd: number, path: string, what: string): CqpError {
  return new CqpError(
    'LOCKED',
    `${what} ${LOCKED_BY_ANOTHER_WRITER} (${holderPid(fd, `${path}.lock`)}): ${path} takes one writer at a time; stop that process first`,
  );
}

/** Whether `path` still names the file open as `fd` (it was not renamed over or removed meanwhile). */
function sameFile(fd: number, path: string): boolean {
  const held = fstatSync(fd);
  const named = statSync(path, { throwIfNoEntry: false });
  return named !== undefined && named.ino === held.ino && named.dev === held.dev;
}

/**
 * Takes the single-writer lock of a store (a command log, a views database) for as long as the writer
 * lives: flock(LOCK_EX|LOCK_NB) on the store file itself, created if missing. The kernel holds the lock
 * and drops it when the process ends however it ends, so a live writer is never taken over, whatever pid
 * namespace the next one runs in. The data file is locked rather than a separate lock file because a
 * lock file can be deleted by hand, and a second writer would then lock the new file at that path while
 * the first still writes (deleting the data file deletes the store: its old writer then writes only to
 * the unlinked file, never into the new one). After locking, the path must still name the locked file: a
 * replay may have renamed a new file over it in between, and the lock of a replaced file guards nothing,
 * so it retries. On Linux's local file systems flock is independent of the POSIX (fcntl) locks SQLite
 * takes on a database file (NFS emulates flock with fcntl, but SQLite's WAL mode needs a local disk
 * anyway), and closing this descriptor drops none of SQLite's locks since it closes only after the
 * database is closed.
 * `PATH.lock` holds the holder's pid only for the message another writer shows (see `holderPid`).
 */
export function acquireLock(path: string, options: { what?: string; create?: boolean } = {}): WriterLock {
  const what = options.what ?? basename(path);
  const { flockSync } = loadFlock();
  let fd: number | undefined;
  let waitUntil: number | undefined;
  let waitingFor: number | undefined;
  for (let attempt = 0; fd === undefined; attempt++) {
    let candidate: number;
    try {
      candidate = openSync(path, options.create === false ? 'r' : 'a');
    } catch (error) {
      const hint = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'check the path' : 'check that the folder is writable';
      throw new CqpError('IO', `${path}: cannot open it to take the writer lock (${messageOf(error)}); ${hint}`, { cause: error });
    }
    try {
      flockSync(candidate, 'exnb');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const locked = code === 'EAGAIN' || code === 'EWOULDBLOCK';
      const holder = locked ? lockHolder(candidate) : undefined;
      const orphan = holder !== undefined && orphanedStage(holder);
      // Once waiting for it, the orphan exiting (its environment already gone, or the lock let go as we
      // looked) is no reason to give up; another live writer taking the lock first is.
      const stillWaiting =
        waitUntil !== undefined && Date.now() < waitUntil && (holder === undefined || holder === waitingFor || orphan || !processAlive(holder));
      if (locked && ((orphan && waitUntil === undefined) || stillWaiting)) {
        if (waitUntil === undefined) process.stderr.write(`cqp: ${what}: waiting for pid ${holder}, a stage of a cqp run that stopped, to finish writing and exit\n`);
        waitUntil ??= Date.now() + ORPHAN_WAIT_MS;
        waitingFor ??= holder;
        closeSync(candidate);
        sleepSync(50);
        attempt--;
        continue;
      }
      const refused = locked ? lockedError(candidate, path, what) : undefined;
      closeSync(candidate);
      if (refused) throw refused;
      throw new CqpError('IO', `${path}: cannot take the writer lock (${messageOf(error)}); the file system may not support flock`, { cause: error });
    }
    if (sameFile(candidate, path)) {
      fd = candidate;
    } else {
      closeSync(candidate);
      if (attempt >= 10) throw new CqpError('IO', `${path}: the file kept being replaced while taking its writer lock; is a replay renaming files over it?`);
    }
  }
  const pidPath = `${path}.lock`;
  const tmp = `${pidPath}.${process.pid}`;
  try {
    // Written aside, then renamed, so another writer never reads it half-written.
    writeFileSync(tmp, `${process.pid}\n`);
    renameSync(tmp, pidPath);
  } catch {
    // Only the message of a refused writer needs it.
  }
  const held = fd;
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    process.off('exit', release);
    try {
      // Still locked here, so no other writer can have written its pid yet.
      if (Number.parseInt(readFileSync(pidPath, 'utf8'), 10) === process.pid) unlinkSync(pidPath);
    } catch {
      // Already gone.
    }
    closeSync(held);
  };
  process.on('exit', release);
  return { release };
}
