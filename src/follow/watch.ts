import { watch, type FSWatcher } from 'node:fs';

/**
 * Wakes a follower when something changes in a folder: fs.watch (inotify and the like) for promptness,
 * a poll timer as the fallback where events are missed or unsupported (network file systems, a file
 * moved elsewhere, a folder that does not exist yet).
 */
export class ChangeWaiter {
  private watcher: FSWatcher | undefined;
  private changed = false;
  private wake: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly pollMs: number,
    private readonly signal: AbortSignal,
    /** Names in the folder whose changes are ours (the checkpoint) and wake nobody. */
    private readonly quiet: ReadonlySet<string> = new Set(),
  ) {
    this.startWatching();
  }

  private startWatching(): void {
    if (this.watcher || this.closed) return;
    try {
      const watcher = watch(this.dir, { persistent: true }, (_event, name) => {
        if (name !== null && this.quiet.has(String(name))) return;
        this.changed = true;
        this.wake?.();
      });
      watcher.on('error', () => {
        watcher.close();
        if (this.watcher === watcher) this.watcher = undefined;
      });
      this.watcher = watcher;
    } catch {
      // No folder yet, or no watch support here: the poll alone will do.
    }
  }

  /** Resolves on the next change, after `pollMs` at the latest, or at once when aborted. */
  async wait(): Promise<void> {
    this.startWatching();
    if (this.changed || this.signal.aborted) {
      this.changed = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.pollMs);
      this.wake = done;
      this.signal.addEventListener('abort', done, { once: true });
    });
    this.changed = false;
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.wake?.();
  }
}
