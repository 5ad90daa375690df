import { unwatchFile, watch, watchFile, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

/**
 * Calls `onChange` (debounced) when one of a set of files is saved: a watch on each file's folder, with a
 * stat poll of each file as fallback. The set can change while it runs (a reload names other files).
 */
export class FileWatch {
  private timer: NodeJS.Timeout | undefined;
  /** One watcher per folder, and the names in it that count. */
  private readonly folders = new Map<string, { watcher: FSWatcher | undefined; names: Set<string> }>();
  private readonly polled = new Set<string>();

  constructor(private readonly onChange: () => void) {}

  private fire(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onChange, 100);
  }

  /** Watches exactly `files` from now on. */
  set(files: readonly string[]): void {
    const wanted = new Map<string, Set<string>>();
    for (const file of files) {
      const names = wanted.get(dirname(file)) ?? new Set<string>();
      names.add(basename(file));
      wanted.set(dirname(file), names);
    }
    for (const [dir, folder] of this.folders) {
      if (wanted.has(dir)) continue;
      folder.watcher?.close();
      this.folders.delete(dir);
    }
    for (const [dir, names] of wanted) {
      const folder = this.folders.get(dir);
      if (folder) folder.names = names;
      else this.folders.set(dir, { watcher: this.watchFolder(dir), names });
    }
    for (const file of this.polled) {
      if (files.includes(file)) continue;
      unwatchFile(file);
      this.polled.delete(file);
    }
    for (const file of files) {
      if (this.polled.has(file)) continue;
      this.polled.add(file);
      watchFile(file, { interval: 500 }, (now, before) => {
        if (now.mtimeMs !== before.mtimeMs || now.size !== before.size || now.ino !== before.ino) this.fire();
      });
    }
  }

  // Watch the folder, not the file: editors save by writing a new file and renaming it over.
  private watchFolder(dir: string): FSWatcher | undefined {
    try {
      const watcher = watch(dir, (_event, name) => {
        if (name === null || this.folders.get(dir)?.names.has(name.toString())) this.fire();
      });
      watcher.on('error', () => {});
      return watcher;
    } catch {
      // A folder that cannot be watched (gone, or no inotify left): the stat poll still sees its files.
      return undefined;
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.set([]);
  }
}
