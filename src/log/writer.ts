import { writeSync } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CqpError, messageOf } from '../core/errors.js';
import { advance, formatPosition, type Position, type PositionMap } from '../core/position.js';
import { HEADER_SIZE, MAGIC, MAX_BODY, chainRecord, decodeHeader, encodeHeader, encodeRecord, recordSize } from './format.js';
import { acquireLock, type WriterLock } from './lock.js';
import { writeIndex, type LogIndex } from './sidecar.js';
import { scanTail, type LogTail } from './tail.js';

/** Largest single write of an append; bigger batches are written in several pieces. */
const MAX_WRITE = 8 << 20;

export type FsyncPolicy = 'always' | 'batch' | 'never';

export interface LogWriterOptions {
  fsync: FsyncPolicy;
  warn: (message: string) => void;
  /** Bytes between sparse index entries (default 4 MiB). */
  indexEveryBytes?: number;
  /** Least time between sidecar rewrites while appending, ms (default 1000). */
  indexEveryMs?: number;
}

export interface AppendItem {
  bytes: Buffer | string;
  position?: Position | undefined;
}

/** The single writer of a command log. */
export interface LogWriter {
  readonly path: string;
  readonly logId: string;
  /** Sequence number of the last record (0 when the log is empty). */
  readonly lastSeq: number;
  /** Last position per source among the records, as `applied()` of an exactly-once sink. */
  applied(): PositionMap;
  /** Appends the items as consecutive records; resolves once they are durable per the fsync policy. */
  appendBatch(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }>;
  close(): Promise<void>;
}

async function syncDir(path: string): Promise<void> {
  let dir: FileHandle | undefined;
  try {
    dir = await open(dirname(path), 'r');
    await dir.sync();
  } catch {
    // Some filesystems cannot fsync a directory; the file itself is still synced.
  } finally {
    await dir?.close();
  }
}

/** Opens (or creates) the command log at `path` for appending, taking its single-writer lock. */
export async function openLogWriter(path: string, options: LogWriterOptions): Promise<LogWriter> {
  try {
    await mkdir(dirname(path), { recursive: true });
  } catch (error) {
    throw new CqpError('IO', `${path}: cannot create the folder of the command log (${messageOf(error)})`, { cause: error });
  }
  const lock = acquireLock(path);
  try {
    return await openLocked(path, options, lock);
  } catch (error) {
    lock.release();
    throw error;
  }
}

async function openLocked(path: string, options: LogWriterOptions, lock: WriterLock): Promise<LogWriter> {
  const everyBytes = options.indexEveryBytes ?? 4 << 20;
  const everyMs = options.indexEveryMs ?? 1000;
  let fh: FileHandle;
  try {
    fh = await open(path, 'r+');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CqpError('IO', `${path}: cannot open the command log (${messageOf(error)})`, { cause: error });
    }
    try {
      fh = await open(path, 'wx+');
    } catch (e) {
      throw new CqpError('IO', `${path}: cannot create the command log (${messageOf(e)}); check that the folder is writable`, { cause: e });
    }
  }
  let tail: LogTail;
  try {
    let size = (await fh.stat()).size;
    if (size < HEADER_SIZE) {
      // A crash while the log was being created leaves a partial header and no records.
      const some = Buffer.alloc(size);
      await fh.read(some, 0, size, 0);
      const prefix = MAGIC.subarray(0, Math.min(size, MAGIC.length));
      if (!some.subarray(0, prefix.length).equals(prefix)) decodeHeader(some, path);
      if (size > 0) options.warn(`${path}: incomplete file header (${size} bytes) from an interrupted creation; starting the log afresh`);
      const { header } = encodeHeader();
      await fh.truncate(0);
      await fh.write(header, 0, HEADER_SIZE, 0);
      await fh.sync();
      await syncDir(path);
      size = HEADER_SIZE;
    }
    const head = Buffer.alloc(HEADER_SIZE);
    await fh.read(head, 0, HEADER_SIZE, 0);
    const logId = decodeHeader(head, path);
    // Every record is verified before the first append is accepted, the ones the index covers too:
    // an append to a log that is corrupt in the middle would be acknowledged and then lost to repair.
    tail = await scanTail(fh, path, logId, everyBytes, true);
    if (tail.torn) {
      options.warn(
        `${path}: cut a torn tail at byte offset ${tail.torn.offset} (${tail.torn.bytes} bytes of an incomplete record, ` +
          `seq ${tail.last.seq + 1}, left by an interrupted write)`,
      );
      await fh.truncate(tail.end);
      await fh.sync();
    }
  } catch (error) {
    await fh.close();
    throw error;
  }
  return new CommandLogWriter(path, fh, lock, tail, options.fsync, everyBytes, everyMs);
}

class CommandLogWriter implements LogWriter {
  lastSeq: number;
  readonly logId: string;
  private end: number;
  private last: { seq: number; offset: number; time: number };
  private readonly positions: PositionMap;
  private readonly entries: Array<[number, number, number]>;
  private lastEntry: number;
  /** Checksum chain of every record written (kept in the index, see `sidecar.ts`). */
  private crcChain: number;
  private chain: Promise<unknown> = Promise.resolve();
  private failed: Error | undefined;
  private closed = false;
  private indexWritten = 0;
  private indexDirty = true;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly lock: WriterLock,
    tail: LogTail,
    private readonly fsync: FsyncPolicy,
    private readonly everyBytes: number,
    private readonly everyMs: number,
  ) {
    this.logId = tail.logId;
    this.end = tail.end;
    this.last = tail.last;
    this.lastSeq = tail.last.seq;
    this.positions = tail.positions;
    this.entries = tail.entries;
    this.lastEntry = tail.entries.at(-1)?.[1] ?? HEADER_SIZE;
    this.crcChain = tail.chain;
  }

  applied(): PositionMap {
    return { ...this.positions };
  }

  appendBatch(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }> {
    const run = this.chain.then(() => this.append(items));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async append(items: AppendItem[]): Promise<{ firstSeq: number; lastSeq: number }> {
    if (this.closed) throw new CqpError('IO', `${this.path}: append after close`);
    if (this.failed) throw new CqpError('IO', `${this.path}: an earlier append failed (${this.failed.message}); reopen the log`, { cause: this.failed });
    const firstSeq = this.lastSeq + 1;
    if (items.length === 0) return { firstSeq, lastSeq: this.lastSeq };
    const n = items.length;
    const positions: Array<string | undefined> = new Array<string | undefined>(n);
    const posLens = new Int32Array(n);
    const dataLens = new Int32Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const item = items[i] as AppendItem;
      const pos = item.position ? formatPosition(item.position) : undefined;
      positions[i] = pos;
      const pl = pos === undefined ? 0 : Buffer.byteLength(pos);
      if (pl > 0xffff) throw new CqpError('IO', `${this.path}: position "${pos?.slice(0, 80)}…" is longer than 65535 bytes`);
      const dl = typeof item.bytes === 'string' ? Buffer.byteLength(item.bytes) : item.bytes.length;
      if (pl + dl > MAX_BODY) throw new CqpError('IO', `${this.path}: an event of ${dl} bytes is larger than a log record may be (${MAX_BODY} bytes)`);
      posLens[i] = pl;
      dataLens[i] = dl;
      total += recordSize(pl + dl);
    }
    const time = Math.max(Date.now(), this.last.time);
    const starts = new Array<number>(n);
    const base = this.end;
    let crcChain = this.crcChain;
    try {
      // Encode and write in pieces of at most MAX_WRITE bytes (one record each under `always`), so a
      // batch of large events never needs one buffer of its whole size.
      let at = 0;
      for (let i = 0; i < n; ) {
        let size = 0;
        let j = i;
        do {
          size += recordSize((posLens[j] as number) + (dataLens[j] as number));
          j++;
        } while (j < n && this.fsync !== 'always' && size + recordSize((posLens[j] as number) + (dataLens[j] as number)) <= MAX_WRITE);
        const out = Buffer.allocUnsafe(size);
        let p = 0;
        for (let k = i; k < j; k++) {
          starts[k] = at + p;
          p = encodeRecord(out, p, firstSeq + k, time, positions[k], posLens[k] as number, (items[k] as AppendItem).bytes, dataLens[k] as number);
          crcChain = chainRecord(crcChain, out, p);
        }
        this.writeAll(out, base + at);
        if (this.fsync === 'always') await this.fh.datasync();
        at += size;
        i = j;
      }
      if (this.fsync === 'batch') await this.fh.datasync();
    } catch (error) {
      this.failed = error as Error;
      await this.fh.truncate(base).catch(() => undefined);
      throw new CqpError('IO', `${this.path}: append failed (${messageOf(error)}); nothing of this batch was acknowledged`, { cause: error });
    }
    for (let i = 0; i < n; i++) {
      const offset = base + (starts[i] as number);
      if (offset - this.lastEntry >= this.everyBytes) {
        this.entries.push([firstSeq + i, offset, time]);
        this.lastEntry = offset;
      }
      const p = (items[i] as AppendItem).position;
      if (p) advance(this.positions, p);
    }
    this.end = base + total;
    this.crcChain = crcChain;
    this.lastSeq = firstSeq + n - 1;
    this.last = { seq: this.lastSeq, offset: base + (starts[n - 1] as number), time };
    this.indexDirty = true;
    if (Date.now() - this.indexWritten >= this.everyMs) await this.saveIndex();
    return { firstSeq, lastSeq: this.lastSeq };
  }

  // A synchronous write: it only copies into the page cache, and a thread-pool round trip per batch
  // costs more than the copy (about half the sink's throughput). The fsync stays asynchronous.
  private writeAll(buf: Buffer, position: number): void {
    let done = 0;
    while (done < buf.length) done += writeSync(this.fh.fd, buf, done, buf.length - done, position + done);
  }

  private async saveIndex(): Promise<void> {
    if (!this.indexDirty) return;
    const idx: LogIndex = {
      format: 2,
      logId: this.logId,
      entries: this.entries,
      last: { ...this.last, end: this.end },
      chain: this.crcChain,
      positions: this.positions,
    };
    this.indexWritten = Date.now();
    this.indexDirty = false;
    // The index is a hint; failing to write it costs a longer scan on the next open, nothing more.
    await writeIndex(this.path, idx).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.chain;
    this.closed = true;
    try {
      if (!this.failed) {
        if (this.fsync !== 'always') await this.fh.datasync().catch(() => undefined);
        await this.saveIndex();
      }
      await this.fh.close();
    } finally {
      this.lock.release();
    }
  }
}
