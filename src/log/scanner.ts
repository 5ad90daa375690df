import type { FileHandle } from 'node:fs/promises';
import { LogCorruptError, chainRecord, decodeRecord, peekRecord, type LogRecord } from './format.js';

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
  /** The checksum chain (`chainRecord`) of every record before `offset`, given the chain at `start`. */
  chain: number;
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
    chain = 0,
  ) {
    this.offset = start;
    this.nextSeq = nextSeq;
    this.chain = chain;
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
          this.accept(peek.size);
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
      if (!(await this.fill(need))) {
        const have = this.lim - this.p;
        if (have > 0) this.torn = { offset: this.offset, bytes: have };
        this.dropBuffer();
        return null;
      }
    }
  }

  /**
   * Verifies the records up to byte offset `end` without decoding them, as fast as the checksums
   * go (a writer's open checks what the index vouches for this way). Any bad record throws
   * LogCorruptError, a zero-filled one included: something intact follows it, so it is no torn
   * tail. Stops early at the end of the file; `offset` then says how far it got.
   */
  async verify(end: number): Promise<void> {
    if (this.pending) throw this.pending;
    while (this.offset < end) {
      const peek = peekRecord(this.buf, this.p, this.lim, this.nextSeq);
      if (peek.kind === 'record') this.accept(peek.size);
      else if (peek.kind === 'bad') throw new LogCorruptError(this.path, this.nextSeq, this.offset, peek.reason);
      else if (!(await this.fill(peek.need))) break;
    }
    this.dropBuffer();
  }

  private accept(size: number): void {
    this.chain = chainRecord(this.chain, this.buf, this.p + size);
    this.p += size;
    this.offset += size;
    this.nextSeq++;
  }

  /** Reads on from `offset` so that at least `need` bytes (one record) are in hand; false at the end of the file. */
  private async fill(need: number): Promise<boolean> {
    const have = this.lim - this.p;
    // A fresh buffer each time: records handed out by `next()` share memory with the previous one.
    const next = Buffer.allocUnsafe(Math.max(this.chunk, need));
    if (have > 0) this.buf.copy(next, 0, this.p, this.lim);
    const { bytesRead } = await this.fh.read(next, have, next.length - have, this.offset + have);
    if (bytesRead === 0) return false;
    this.buf = next;
    this.p = 0;
    this.lim = have + bytesRead;
    return true;
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
