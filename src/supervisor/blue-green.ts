/**
 * Blue/green files for `cqp replay`: a sink that writes a file is pointed at a new file
 * beside its target, `<target>.replay-<pid>`, and only when the whole replay has succeeded is that file
 * made complete on disk and renamed over the target. Until then the target is never opened, so a failed
 * or killed replay leaves it byte for byte as it was; the next replay removes what the dead one left.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { StoreRebuild } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { acquireLock, type WriterLock } from '../log/lock.js';
import { processAlive } from '../core/pid.js';

/** One sink's file being rebuilt: written at `temp`, renamed over `target` at the end, as its definition says. */
export interface BlueGreenFile {
  sink: string;
  target: string;
  temp: string;
  /** The sink's option that names the file (pointed at `temp` while the replay runs). */
  option: string;
  /** One writer at a time (the lock beside the file): the replay holds it throughout. */
  locked: boolean;
  rebuild: StoreRebuild;
}

/** The new file a replay by process `pid` builds for `target`. */
export function tempPathFor(target: string, pid = process.pid): string {
  return `${target}.replay-${pid}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
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
  const busy = files.find((f) => f.pid !== process.pid && processAlive(f.pid));
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
  if (!file.locked) return undefined;
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

/** Makes the new file complete on its own (as the sink's definition says), then flushes it and its companions to disk. */
export async function completeTemp(file: BlueGreenFile): Promise<void> {
  const { rebuild } = file;
  if (!existsSync(file.temp)) {
    // A sink that never started writing: the target becomes empty if the sink would have made it so.
    if (!rebuild.emptyWhenUnwritten) throw new CqpError('IO', `${file.temp}: sink ${file.sink} did not create its new file; the target ${file.target} is unchanged`);
    writeFileSync(file.temp, '');
  }
  await rebuild.complete?.(file.temp);
  fsyncPath(file.temp);
  for (const suffix of rebuild.companions ?? []) if (existsSync(`${file.temp}${suffix}`)) fsyncPath(`${file.temp}${suffix}`);
}

/**
 * Renames the new file over the target (atomic: readers see the old file or the new one, never a mix)
 * and moves or removes the target's companions so none of the old file's is left beside the new one:
 * those the new file lacks are removed before the rename, those it has follow it.
 */
export function commitTemp(file: BlueGreenFile): void {
  const companions = file.rebuild.companions ?? [];
  const moved = companions.filter((suffix) => existsSync(`${file.temp}${suffix}`));
  try {
    for (const suffix of companions) if (!moved.includes(suffix)) rmSync(`${file.target}${suffix}`, { force: true });
    renameSync(file.temp, file.target);
    for (const suffix of moved) renameSync(`${file.temp}${suffix}`, `${file.target}${suffix}`);
    fsyncPath(dirname(file.target));
  } catch (error) {
    throw new CqpError('IO', `${file.target}: cannot rename the replayed ${file.temp} over it (${messageOf(error)})`, { cause: error });
  }
  discardTemp(file);
}
