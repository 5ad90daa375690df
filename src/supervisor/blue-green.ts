/**
 * Blue/green files for `cqp replay`: a sink that writes a file is pointed at a new file
 * beside its target, `<target>.replay-<pid>`, and only when the whole replay has succeeded is that file
 * made complete on disk and renamed over the target. Until then the target is never opened, so a failed
 * or killed replay leaves it byte for byte as it was; the next replay removes what the dead one left.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { CqpError, messageOf } from '../core/errors.js';
import { acquireLock, type WriterLock } from '../log/lock.js';

/** The file sink types whose output replay rebuilds blue/green, and the option naming the file. */
export const FILE_OPTION: Readonly<Record<string, 'db' | 'path'>> = { sqlite: 'db', log: 'path', file: 'path' };

/** One sink's file being rebuilt: written at `temp`, renamed over `target` at the end. */
export interface BlueGreenFile {
  sink: string;
  type: string;
  target: string;
  temp: string;
}

/** The files SQLite keeps beside a database while it is open. */
const SQLITE_COMPANIONS = ['-wal', '-shm', '-journal'];

/** The new file a replay by process `pid` builds for `target`. */
export function tempPathFor(target: string, pid = process.pid): string {
  return `${target}.replay-${pid}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Names in the target's folder that replays left for it, with the pid of the replay that made each. */
function replayFiles(target: string): Array<{ path: string; pid: number }> {
  let names: string[];
  try {
    names = readdirSync(dirname(target));
  } catch {
    return [];
  }
  const pattern = new RegExp(`^${escapeRegExp(basename(target))}\\.replay-(\\d+)(?:$|[-.])`);
  const found: Array<{ path: string; pid: number }> = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (m) found.push({ path: join(dirname(target), name), pid: Number(m[1]) });
  }
  return found;
}

/**
 * Removes the files interrupted replays left beside `target` (their process is gone) and returns
 * them; throws when another replay that is still running builds the same target.
 */
export function clearLeftovers(target: string): string[] {
  const files = replayFiles(target);
  const busy = files.find((f) => f.pid !== process.pid && running(f.pid));
  if (busy) {
    throw new CqpError(
      'LOCKED',
      `${target}: another replay (pid ${busy.pid}) is building it (${busy.path}); wait for it to finish, or stop it and run this replay again`,
    );
  }
  const removed: string[] = [];
  for (const f of files) {
    if (f.pid === process.pid) continue;
    rmSync(f.path, { force: true, recursive: true });
    removed.push(f.path);
  }
  return removed;
}

/** Removes this replay's new file for `file` and everything beside it (the replay failed or was stopped). */
export function discardTemp(file: BlueGreenFile): void {
  for (const f of replayFiles(file.target)) if (f.pid === process.pid) rmSync(f.path, { force: true, recursive: true });
}

/**
 * Takes the writer lock of a target that has one writer at a time (a log, a views database) for the
 * whole replay: a live writer appending to it meanwhile would lose its writes in the rename, so it is
 * refused, and a replay does not start while one runs. A target that did not exist is created empty to
 * hold the lock; if the replay does not replace it, that placeholder is removed again on release.
 */
export function lockTarget(file: BlueGreenFile): WriterLock | undefined {
  if (file.type !== 'log' && file.type !== 'sqlite') return undefined;
  mkdirSync(dirname(file.target), { recursive: true });
  const existed = existsSync(file.target);
  const lock = acquireLock(file.target);
  if (existed) return lock;
  const placeholder = statSync(file.target);
  return {
    release() {
      const now = statSync(file.target, { throwIfNoEntry: false });
      if (now !== undefined && now.ino === placeholder.ino && now.dev === placeholder.dev && now.size === 0) rmSync(file.target, { force: true });
      lock.release();
    },
  };
}

/** Creates the folder the target lives in, so the sink can create its new file there. */
export function prepareTemp(file: BlueGreenFile): void {
  mkdirSync(dirname(file.target), { recursive: true });
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes the new file complete on its own: a SQLite database gets its WAL checkpointed into it and
 * leaves WAL mode (no `-wal` beside it to lose in the rename); then it is flushed to disk.
 */
export async function completeTemp(file: BlueGreenFile): Promise<void> {
  if (!existsSync(file.temp)) {
    // A sink that never started writing: the target becomes empty, as the sink would have made it.
    if (file.type !== 'file') throw new CqpError('IO', `${file.temp}: sink ${file.sink} did not create its new file; the target ${file.target} is unchanged`);
    writeFileSync(file.temp, '');
  }
  if (file.type === 'sqlite') {
    const db = new Database(file.temp, { fileMustExist: true });
    try {
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.pragma('journal_mode = DELETE');
    } finally {
      db.close();
    }
  }
  fsyncPath(file.temp);
  const idx = `${file.temp}.idx`;
  if (file.type === 'log' && existsSync(idx)) fsyncPath(idx);
}

/**
 * Renames the new file over the target (atomic: readers see the old file or the new one, never a mix)
 * and moves or removes the target's companions so none of the old file's is left beside the new one.
 */
export function commitTemp(file: BlueGreenFile): void {
  try {
    if (file.type === 'sqlite') {
      // A stale WAL beside the new database would be replayed into it by the next reader.
      for (const suffix of SQLITE_COMPANIONS) rmSync(`${file.target}${suffix}`, { force: true });
    }
    renameSync(file.temp, file.target);
    if (file.type === 'log') {
      // The old index names the old log's id, so it is ignored until replaced; replace it now.
      if (existsSync(`${file.temp}.idx`)) renameSync(`${file.temp}.idx`, `${file.target}.idx`);
      else rmSync(`${file.target}.idx`, { force: true });
    }
    fsyncPath(dirname(file.target));
  } catch (error) {
    throw new CqpError('IO', `${file.target}: cannot rename the replayed ${file.temp} over it (${messageOf(error)})`, { cause: error });
  }
  discardTemp(file);
}
