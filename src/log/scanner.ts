import type { FileHandle } from 'node:fs/promises';
import { LogCorruptError, decodeRecord, peekRecord, type LogRecord } from './format.js';

const CHUNK = 1 << 20;

/**
 * Walks records forward from a record boundary, verifying each, in batches of one read's worth.
 * An incomplete record at the end of the file is not an error: `next()` returns null and `torn`
 * says where it starts, and the next call reads again from that boundary (a writer may be finishing
 * it, or may cut it and write new records there). A bad record throws LogCorruptError, after the
 * records before it have been returned.
 */
export class RecordScanner {
  /** File offset of the next record to read (the end of everything returned so far). */
  offset: number;
  /** Sequence number the next record must carry. */
  nextSeq: number;
  /** Set when the last `next()` stopped at an incomplete record or a zero-filled tail. */
  torn: { offset: number; bytes: number } | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private p = 0;
  private lim = 0;
  private pending: LogCorruptError | undefined;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    start: number,
    nextSeq: number,
    private readonly chunk = CHUNK,
  ) {
    this.offset = start;
    this.nextSeq = nextSeq;
  }

  /** The next batch of verified records, or null at the end of the file for now. */
  async next(): Promise<LogRecord[] | null> {
    if (this.pending) throw this.pending;
    this.torn = undefined;
    for (;;) {
      const records: LogRecord[] = [];
      let need = 0;
      const buf = this.buf;
      while (need === 0) {
        const peek = peekRecord(buf, this.p, this.lim, this.nextSeq);
        if (peek.kind === 'record') {
          records.push(decodeRecord(buf, this.p));
          this.p += peek.size;
          this.offset += peek.size;
          this.nextSeq++;
        } else if (peek.kind === 'short') {
          need = peek.need;
        } else {
          if (peek.zeroHeader && (await this.zeroToEnd(this.offset))) {
            const size = (await this.fh.stat()).size;
            this.torn = { offset: this.offset, bytes: size - this.offset };
            this.dropBuffer();
            return records.length > 0 ? records : null;
          }
          const error = new LogCorruptError(this.path, this.nextSeq, this.offset, peek.reason);
          if (records.length > 0) {
            this.pending = error;
            return records;
          }
          throw error;
        }
      }
      if (records.length > 0) return records;
      const have = this.lim - this.p;
      const next = Buffer.allocUnsafe(Math.max(this.chunk, need));
      if (have > 0) buf.copy(next, 0, this.p, this.lim);
      const { bytesRead } = await this.fh.read(next, have, next.length - have, this.offset + have);
      if (bytesRead === 0) {
        if (have > 0) this.torn = { offset: this.offset, bytes: have };
        this.dropBuffer();
        return null;
      }
      this.buf = next;
      this.p = 0;
      this.lim = have + bytesRead;
    }
  }

  private dropBuffer(): void {
    this.buf = Buffer.alloc(0);
    this.p = 0;
    this.lim = 0;
  }

  private async zeroToEnd(from: number): Promise<boolean> {
    const buf = Buffer.allocUnsafe(this.chunk);
    for (let at = from; ; ) {
      const { bytesRead } = await this.fh.read(buf, 0, buf.length, at);
      if (bytesRead === 0) return true;
      for (let i = 0; i < bytesRead; i++) if (buf[i] !== 0) return false;
      at += bytesRead;
    }
  }
}
