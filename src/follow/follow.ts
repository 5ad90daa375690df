import type { Stats } from 'node:fs';
import { open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CqpError, messageOf } from '../core/errors.js';
import { LineSplitter, type SplitLine } from '../core/lines.js';
import { READ_CHUNK_BYTES } from '../core/runtime.js';
import { fingerprintOf } from './fingerprint.js';
import { ChangeWaiter } from './watch.js';

/** Where to resume in the file with a given fingerprint. */
export interface ResumePoint {
  fingerprint: string;
  /** Byte offset where a line starts. */
  offset: number;
  /** True: resume at the line starting at `offset`; false: after it (it was handed out whole). */
  inclusive: boolean;
}

export interface FollowOptions {
  path: string;
  /** Keep reading as the file grows (tail -F); otherwise stop at its end. */
  follow: boolean;
  /** Where to start in a file present at start-up when no resume point matches. */
  start: 'beginning' | 'end';
  pollMs: number;
  maxLineBytes: number;
  /** Candidates to resume from; the first whose file is found wins (see `followFile`). */
  resume: ResumePoint[];
  signal: AbortSignal;
  warn: (message: string) => void;
  /** Bytes per read (default READ_CHUNK_BYTES, 96 KiB). */
  chunkBytes?: number;
  /** Names beside the path whose changes should not wake the follower (the checkpoint). */
  quietNames?: string[];
}

/** Lines read from one file, with what a checkpoint needs. */
export interface FileLines {
  fingerprint: string;
  lines: SplitLine[];
  /** Byte offset just after the last line in `lines` (where reading goes on). */
  next: number;
}

const DEFAULT_CHUNK = READ_CHUNK_BYTES;

interface OpenFile {
  fh: FileHandle;
  name: string;
  ino: number;
  dev: number;
  fingerprint: string | undefined;
  /** Next byte to read. */
  pos: number;
  splitter: LineSplitter;
  /** Known to have been rotated away from the path (found beside it on resume). */
  rotated: boolean;
  /** Seen truncated (or rewritten) while reading; the follower starts it over. */
  truncated: boolean;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/**
 * Reads a file's lines in large chunks, like `tail -F` when `follow` is set:
 * - appends are picked up at once (fs.watch on the folder, with a poll every `pollMs` as fallback);
 *   a partial last line waits for its newline;
 * - truncation (the size drops below our offset, or the first line changed) restarts at 0 with a
 *   warning. Copy-and-truncate rotation is this case: lines appended after our last read and before
 *   the truncation (in particular between the copy and the truncation) are lost — inherent to it;
 * - rotation by rename (another file appears at the path) finishes the old file through its still
 *   open descriptor, then moves to the new one from its start;
 * - a path that does not exist yet is waited for.
 * On start, a resume point whose fingerprint matches the file at the path is used; failing that, one
 * matching a file beside it whose name starts with the path's name (`app.log.1`, `app.log-2024…`: the
 * rotated-away file), which is finished before the path is read from its start; failing that, a
 * warning, and `start` applies.
 */
export async function* followFile(options: FollowOptions): AsyncGenerator<FileLines> {
  const follower = new Follower(options);
  try {
    yield* follower.run();
  } finally {
    await follower.close();
  }
}

class Follower {
  private readonly waiter: ChangeWaiter | undefined;
  private readonly chunkBytes: number;
  private buffer: Buffer | undefined;
  private cur: OpenFile | undefined;

  constructor(private readonly o: FollowOptions) {
    this.chunkBytes = o.chunkBytes ?? DEFAULT_CHUNK;
    if (o.follow) this.waiter = new ChangeWaiter(dirname(o.path), o.pollMs, o.signal, new Set(o.quietNames ?? []));
  }

  async close(): Promise<void> {
    this.waiter?.close();
    const cur = this.cur;
    this.cur = undefined;
    await cur?.fh.close();
  }

  async *run(): AsyncGenerator<FileLines> {
    const { o } = this;
    this.cur = await this.begin();
    for (;;) {
      if (o.signal.aborted) return;
      const cur = this.cur ?? (await this.waitForPath());
      if (!cur) return;
      this.cur = cur;
      yield* this.readToEnd(cur);
      if (o.signal.aborted) return;
      if (!o.follow && !cur.truncated) {
        yield* this.finish(cur);
        await this.drop(cur);
        if (!cur.rotated) return;
        const next = await this.tryOpen(o.path);
        if (next && (next.ino !== cur.ino || next.dev !== cur.dev)) this.cur = next;
        else await next?.fh.close();
        continue;
      }
      const atPath = await statOrUndefined(o.path);
      if (atPath && (atPath.ino !== cur.ino || atPath.dev !== cur.dev) && !cur.truncated) {
        // Another file at the path: the writer has moved on. Take what is left of the old one first.
        yield* this.readToEnd(cur);
        yield* this.finish(cur);
        await this.drop(cur);
        continue;
      }
      const size = (await cur.fh.stat()).size;
      if (size < cur.pos || (size > cur.pos && (await this.rewritten(cur)))) cur.truncated = true;
      if (cur.truncated) {
        o.warn(`cqp: ${cur.name} was truncated; reading it again from the start (lines written since the last read are lost)`);
        cur.pos = 0;
        cur.fingerprint = undefined;
        cur.truncated = false;
        cur.splitter = new LineSplitter(o.maxLineBytes);
        continue;
      }
      if (size > cur.pos) continue;
      await this.waiter?.wait();
    }
  }

  /** True when the file's first line is no longer the one it had (truncated and written again). */
  private async rewritten(cur: OpenFile): Promise<boolean> {
    return cur.fingerprint !== undefined && (await fingerprintOf(cur.fh)) !== cur.fingerprint;
  }

  private async drop(cur: OpenFile): Promise<void> {
    if (this.cur === cur) this.cur = undefined;
    await cur.fh.close();
  }

  private async *readToEnd(cur: OpenFile): AsyncGenerator<FileLines> {
    for (;;) {
      if (this.o.signal.aborted) return;
      const buffer = (this.buffer ??= Buffer.allocUnsafe(this.chunkBytes));
      const { bytesRead } = await cur.fh.read(buffer, 0, buffer.length, cur.pos);
      if (bytesRead === 0) return;
      // What was read counts only if the file is still the one we were reading: a truncated and
      // rewritten file would give a later generation's bytes at our offset.
      if (await this.rewritten(cur)) {
        cur.truncated = true;
        return;
      }
      cur.pos += bytesRead;
      // The splitter keeps a partial line by reference: hand big reads over, copy small ones.
      let data: Buffer;
      if (bytesRead >= buffer.length / 2) {
        data = buffer.subarray(0, bytesRead);
        this.buffer = undefined;
      } else {
        data = Buffer.from(buffer.subarray(0, bytesRead));
      }
      const lines = cur.splitter.push(data);
      if (lines.length > 0) yield await this.batch(cur, lines, false);
    }
  }

  /** The unterminated last line of a file that will not grow any more. */
  private async *finish(cur: OpenFile): AsyncGenerator<FileLines> {
    const lines = cur.splitter.end();
    if (lines.length > 0) yield await this.batch(cur, lines, true);
  }

  private async batch(cur: OpenFile, lines: SplitLine[], final: boolean): Promise<FileLines> {
    cur.fingerprint ??= (await fingerprintOf(cur.fh, final)) ?? (await fingerprintOf(cur.fh, true));
    return { fingerprint: cur.fingerprint as string, lines, next: cur.splitter.position };
  }

  private async tryOpen(path: string, rotated = false): Promise<OpenFile | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw new CqpError('IO', `cannot open ${path}: ${messageOf(error)}`, { cause: error });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new CqpError('IO', `${path} is not a regular file; give the path of a file to read`);
      return {
        fh,
        name: path,
        ino: st.ino,
        dev: st.dev,
        fingerprint: await fingerprintOf(fh),
        pos: 0,
        splitter: new LineSplitter(this.o.maxLineBytes),
        rotated,
        truncated: false,
      };
    } catch (error) {
      await fh.close();
      throw error;
    }
  }

  private async waitForPath(): Promise<OpenFile | undefined> {
    for (;;) {
      if (this.o.signal.aborted) return undefined;
      const file = await this.tryOpen(this.o.path);
      if (file) return file;
      await this.waiter?.wait();
    }
  }

  /** The file and offset to start with (undefined: wait for the path to appear). */
  private async begin(): Promise<OpenFile | undefined> {
    const { o } = this;
    const here = await this.tryOpen(o.path);
    if (o.resume.length > 0) {
      const point = here && o.resume.find((p) => p.fingerprint === here.fingerprint);
      if (here && point) return this.seek(here, point);
      const rotated = await this.findRotated(here);
      if (rotated) {
        await here?.fh.close();
        return rotated;
      }
      o.warn(
        `cqp: no file with fingerprint ${o.resume.map((p) => p.fingerprint).join(', ')} at ${o.path} or beside it; ` +
          `starting at the ${o.start === 'end' ? 'end' : 'beginning'} of ${o.path}`,
      );
    }
    if (!here) {
      if (!o.follow) throw new CqpError('IO', `${o.path} does not exist; check the path, or add --follow to wait for it`);
      return undefined;
    }
    if (o.start === 'end') {
      const at = await lastLineStart(here.fh, (await here.fh.stat()).size);
      here.pos = at;
      here.splitter = new LineSplitter(o.maxLineBytes, { offset: at });
    }
    return here;
  }

  /** Positions an open file at a resume point. */
  private async seek(file: OpenFile, point: ResumePoint): Promise<OpenFile> {
    const size = (await file.fh.stat()).size;
    let at: number | undefined = point.offset;
    if (!point.inclusive) at = point.offset < size ? await lineEnd(file.fh, point.offset, size) : undefined;
    if (at === undefined || at > size) {
      this.o.warn(`cqp: ${file.name} is shorter than the position to resume from (${point.offset}); reading it from the start`);
      at = 0;
    }
    file.pos = at;
    file.splitter = new LineSplitter(this.o.maxLineBytes, { offset: at });
    return file;
  }

  /** A rotated-away file beside the path that a resume point names (the most recently modified). */
  private async findRotated(here: OpenFile | undefined): Promise<OpenFile | undefined> {
    const { o } = this;
    const dir = dirname(o.path);
    const base = basename(o.path);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return undefined;
    }
    const quiet = new Set(o.quietNames ?? []);
    let best: { file: OpenFile; point: ResumePoint; mtime: number } | undefined;
    for (const name of names) {
      if (name === base || !name.startsWith(base) || quiet.has(name)) continue;
      const file = await this.tryOpen(join(dir, name), true).catch(() => undefined);
      if (!file) continue;
      const point = o.resume.find((p) => p.fingerprint === file.fingerprint);
      const mtime = point && !(here && here.ino === file.ino && here.dev === file.dev) ? (await file.fh.stat()).mtimeMs : -1;
      if (point && mtime >= 0 && (!best || mtime > best.mtime)) {
        await best?.file.fh.close();
        best = { file, point, mtime };
      } else {
        await file.fh.close();
      }
    }
    if (!best) return undefined;
    o.warn(`cqp: resuming in ${best.file.name} (rotated away from ${o.path}), then reading ${o.path} from its start`);
    return this.seek(best.file, best.point);
  }
}

/** Offset just after the line that starts at `from` (the file's size when that line has no newline). */
async function lineEnd(fh: FileHandle, from: number, size: number): Promise<number> {
  const buffer = Buffer.allocUnsafe(64 * 1024);
  let at = from;
  while (at < size) {
    const { bytesRead } = await fh.read(buffer, 0, buffer.length, at);
    if (bytesRead === 0) break;
    const nl = buffer.subarray(0, bytesRead).indexOf(10);
    if (nl >= 0) return at + nl + 1;
    at += bytesRead;
  }
  return size;
}

/** Offset just after the last newline before `size` (0 when there is none). */
async function lastLineStart(fh: FileHandle, size: number): Promise<number> {
  const buffer = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  while (end > 0) {
    const from = Math.max(0, end - buffer.length);
    const { bytesRead } = await fh.read(buffer, 0, end - from, from);
    const nl = buffer.subarray(0, bytesRead).lastIndexOf(10);
    if (nl >= 0) return from + nl + 1;
    end = from;
  }
  return 0;
}
