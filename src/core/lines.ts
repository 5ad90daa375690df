/** One line cut from a byte stream. */
export interface SplitLine {
  /** The text without `\n` or `\r\n`; empty for a line that was too long. */
  text: string;
  /** 1-based line number. */
  no: number;
  /** Byte offset where the line starts in the stream. */
  start: number;
  /** Byte length of a line over the bound (its text is not kept); 0 otherwise. */
  tooLong: number;
}

const NL = 10;
const BOM = '\uFEFF';

/**
 * Cuts a byte stream into lines. Splits on the `\n` byte before decoding, so a multi-byte UTF-8
 * character split across chunks survives; holds at most `maxLineBytes` of an unfinished line, so an
 * oversized line is reported (with `tooLong`) without ever being held whole. Empty lines are skipped,
 * a `\r` before `\n` is dropped, and a UTF-8 BOM at the start is ignored.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes of an oversized line seen so far (we are skipping to its end). */
  private skipping = 0;
  private lineNo: number;
  /** Byte offset of the first pending byte. */
  private offset: number;

  constructor(
    private readonly maxLineBytes: number,
    start: { offset?: number; lineNo?: number } = {},
  ) {
    this.offset = start.offset ?? 0;
    this.lineNo = start.lineNo ?? 0;
  }

  /** Complete lines ending in this chunk. */
  push(chunk: Buffer): SplitLine[] {
    const out: SplitLine[] = [];
    const lastNl = chunk.lastIndexOf(NL);
    if (lastNl < 0) {
      this.hold(chunk);
      return out;
    }
    let from = 0;
    if (this.skipping > 0) {
      const firstNl = chunk.indexOf(NL);
      this.finishSkipped(firstNl, out);
      from = firstNl + 1;
    } else if (this.pendingBytes > 0) {
      // Only the unfinished line and the head of this chunk are copied; the rest is decoded in place
      // (it starts after a newline byte, so on a character boundary).
      const firstNl = chunk.indexOf(NL);
      this.pending.push(chunk.subarray(0, firstNl + 1));
      this.cut(Buffer.concat(this.pending, this.pendingBytes + firstNl + 1), out);
      this.pending = [];
      this.pendingBytes = 0;
      from = firstNl + 1;
    }
    if (from <= lastNl) this.cut(chunk.subarray(from, lastNl + 1), out);
    this.hold(chunk.subarray(lastNl + 1));
    return out;
  }

  /** The last line when the input does not end with a newline. */
  end(): SplitLine[] {
    const out: SplitLine[] = [];
    if (this.skipping > 0) {
      this.finishSkipped(-1, out);
    } else if (this.pendingBytes > 0) {
      const region = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.cut(Buffer.concat([region, Buffer.from('\n')]), out);
      this.offset -= 1;
    }
    return out;
  }

  /** Byte offset just after the last complete line handed out. */
  get position(): number {
    return this.offset;
  }

  private hold(rest: Buffer): void {
    if (rest.length === 0) return;
    if (this.skipping > 0) {
      this.skipping += rest.length;
      return;
    }
    if (this.pendingBytes + rest.length > this.maxLineBytes) {
      this.skipping = this.pendingBytes + rest.length;
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    this.pending.push(rest);
    this.pendingBytes += rest.length;
  }

  private finishSkipped(nlIndex: number, out: SplitLine[]): void {
    const bytes = this.skipping + (nlIndex < 0 ? 0 : nlIndex);
    this.lineNo++;
    out.push({ text: '', no: this.lineNo, start: this.offset, tooLong: bytes });
    this.offset += bytes + (nlIndex < 0 ? 0 : 1);
    this.skipping = 0;
  }

  /** Cuts a region that ends with `\n` into lines. */
  private cut(region: Buffer, out: SplitLine[]): void {
    const text = region.toString('utf8');
    const ascii = text.length === region.length;
    const max = this.maxLineBytes;
    let s = 0;
    let byte = this.offset;
    for (;;) {
      const nl = text.indexOf('\n', s);
      if (nl < 0) break;
      this.lineNo++;
      const charLen = nl - s;
      const bytes = ascii || charLen === 0 ? charLen : Buffer.byteLength(text.slice(s, nl));
      let end = nl;
      if (end > s && text.charCodeAt(end - 1) === 13) end--;
      if (bytes > max) {
        out.push({ text: '', no: this.lineNo, start: byte, tooLong: bytes });
      } else if (end > s) {
        let line = text.slice(s, end);
        if (this.lineNo === 1 && line.startsWith(BOM)) line = line.slice(1);
        if (line.length > 0) out.push({ text: line, no: this.lineNo, start: byte, tooLong: 0 });
      }
      byte += bytes + 1;
      s = nl + 1;
    }
    this.offset = byte;
  }
}
