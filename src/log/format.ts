import { randomBytes } from 'node:crypto';
import { CqpError } from '../core/errors.js';
import { crc32c } from './crc32c.js';

/**
 * On-disk format of the command log (all integers little-endian).
 *
 * File header, 32 bytes:
 *   0  magic "CQPLOG\n\0"      8 bytes
 *   8  format version          u16 (1)
 *  10  reserved                u16 (0)
 *  12  logId                   16 random bytes (shown as 32 hex digits)
 *  28  CRC-32C of bytes 0..27  u32
 *
 * Then records, each 32 bytes plus its body:
 *   0  body length             u32 (position bytes + event bytes)
 *   4  position length         u16 (0 when the event carried no position)
 *   6  reserved                u16 (0)
 *   8  sequence number         u64 (1, 2, 3 … no gaps)
 *  16  append time             u64 (ms since the epoch, never decreasing)
 *  24  CRC-32C of bytes 0..23  u32 (so a damaged length is never mistaken for a torn tail)
 *  28  position text (UTF-8, `<source>:<n>`), then the event bytes
 *  28+body  CRC-32C of the record from byte 0 to the end of the body   u32
 */
export const MAGIC = Buffer.from('CQPLOG\n\0', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_SIZE = 32;
export const RECORD_HEAD = 28;
export const RECORD_OVERHEAD = 32;
/** Largest body a record may claim; anything above is damage, not data. */
export const MAX_BODY = 1 << 30;
const TWO_32 = 0x1_0000_0000;

/** One record as readers see it. */
export interface LogRecord {
  seq: number;
  /** Append time, ms since the epoch. */
  time: number;
  /** The event's position `<source>:<n>`, when it had one. */
  position?: string;
  bytes: Buffer;
}

/** A place in the log: a sequence number or an append time (ms); bounds are inclusive. */
export type LogPos = { seq: number } | { time: number };

/** Builds a new file header with a random log id. */
export function encodeHeader(): { header: Buffer; logId: string } {
  const header = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(header, 0);
  header.writeUInt16LE(FORMAT_VERSION, 8);
  const id = randomBytes(16);
  id.copy(header, 12);
  header.writeUInt32LE(crc32c(header, 0, 28), 28);
  return { header, logId: id.toString('hex') };
}

/** Checks a file header and returns the log id; CORRUPT when it is not a cqp command log. */
export function decodeHeader(buf: Buffer, path: string): string {
  if (buf.length < HEADER_SIZE || !buf.subarray(0, 8).equals(MAGIC)) {
    throw new CqpError('CORRUPT', `${path}: not a cqp command log (bad file header); check the path, or move the file away to start a new log`);
  }
  if (buf.readUInt32LE(28) !== crc32c(buf, 0, 28)) {
    throw new CqpError('CORRUPT', `${path}: the file header is damaged (checksum mismatch at byte offset 0); the log id cannot be trusted`);
  }
  const version = buf.readUInt16LE(8);
  if (version !== FORMAT_VERSION) {
    throw new CqpError('CORRUPT', `${path}: command log format version ${version} is not supported (this cqp reads version ${FORMAT_VERSION}); use a newer cqp`);
  }
  return buf.subarray(12, 28).toString('hex');
}

export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * TWO_32;
}

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % TWO_32, at);
  buf.writeUInt32LE(Math.floor(value / TWO_32), at + 4);
}

/** Size on disk of a record with the given body. */
export function recordSize(bodyBytes: number): number {
  return RECORD_OVERHEAD + bodyBytes;
}

/**
 * Writes one record at `at` in `out` (which must have room for it) and returns the offset after it.
 * `data` is written as UTF-8 when it is a string; `dataLen` is its byte length.
 */
export function encodeRecord(
  out: Buffer,
  at: number,
  seq: number,
  time: number,
  position: string | undefined,
  posLen: number,
  data: Buffer | string,
  dataLen: number,
): number {
  const bodyLen = posLen + dataLen;
  out.writeUInt32LE(bodyLen, at);
  out.writeUInt16LE(posLen, at + 4);
  out.writeUInt16LE(0, at + 6);
  writeU64(out, seq, at + 8);
  writeU64(out, time, at + 16);
  out.writeUInt32LE(crc32c(out, at, at + 24), at + 24);
  let p = at + RECORD_HEAD;
  if (position !== undefined && posLen > 0) p += out.write(position, p, 'utf8');
  if (typeof data === 'string') p += out.write(data, p, 'utf8');
  else p += data.copy(out, p);
  out.writeUInt32LE(crc32c(out, at, p), p);
  return p + 4;
}

/**
 * Extends a checksum chain with the record that ends at `end` in `buf`: the chain is the CRC-32C of
 * the records' stored CRCs, in order (0 before the first record). The index keeps it for the records
 * it covers, which binds the index to exactly those records at 4 bytes of checksum per record.
 */
export function chainRecord(chain: number, buf: Buffer, end: number): number {
  return crc32c(buf, end - 4, end, chain);
}

/** Result of looking at the bytes at one record boundary. */
export type Peek =
  | { kind: 'record'; size: number }
  | { kind: 'short'; need: number }
  | { kind: 'bad'; reason: string; zeroHeader: boolean };

/**
 * Examines the record starting at `buf[at]` with `limit` valid bytes in `buf` and checks both
 * checksums and the sequence number; `short` says how many bytes the record needs in total.
 */
export function peekRecord(buf: Buffer, at: number, limit: number, expectedSeq: number): Peek {
  if (limit - at < RECORD_HEAD) return { kind: 'short', need: RECORD_HEAD };
  if (buf.readUInt32LE(at + 24) !== crc32c(buf, at, at + 24)) {
    let zero = true;
    for (let i = at; i < at + RECORD_HEAD; i++) {
      if (buf[i] !== 0) {
        zero = false;
        break;
      }
    }
    return { kind: 'bad', reason: 'record header checksum mismatch', zeroHeader: zero };
  }
  const bodyLen = buf.readUInt32LE(at);
  const posLen = buf.readUInt16LE(at + 4);
  if (bodyLen > MAX_BODY || posLen > bodyLen) {
    return { kind: 'bad', reason: `impossible record length ${bodyLen}`, zeroHeader: false };
  }
  const size = RECORD_OVERHEAD + bodyLen;
  if (limit - at < size) return { kind: 'short', need: size };
  const end = at + RECORD_HEAD + bodyLen;
  if (buf.readUInt32LE(end) !== crc32c(buf, at, end)) {
    return { kind: 'bad', reason: 'record checksum mismatch', zeroHeader: false };
  }
  const seq = readU64(buf, at + 8);
  if (seq !== expectedSeq) {
    return { kind: 'bad', reason: `sequence number ${seq} where ${expectedSeq} was expected`, zeroHeader: false };
  }
  return { kind: 'record', size };
}

/** Decodes a record that `peekRecord` accepted; `bytes` shares memory with `buf`. */
export function decodeRecord(buf: Buffer, at: number): LogRecord {
  const bodyLen = buf.readUInt32LE(at);
  const posLen = buf.readUInt16LE(at + 4);
  const body = at + RECORD_HEAD;
  const rec: LogRecord = {
    seq: readU64(buf, at + 8),
    time: readU64(buf, at + 16),
    bytes: buf.subarray(body + posLen, body + bodyLen),
  };
  if (posLen > 0) rec.position = buf.toString('utf8', body, body + posLen);
  return rec;
}

/** Thrown for a record that does not check out; carries where it is for `verify` and `repair`. */
export class LogCorruptError extends CqpError {
  readonly seq: number;
  readonly offset: number;
  readonly reason: string;

  constructor(path: string, seq: number, offset: number, reason: string) {
    super(
      'CORRUPT',
      `${path}: record ${seq} at byte offset ${offset} is corrupt (${reason}); ` +
        `nothing at or after it can be read or appended. Run \`cqp log repair ${path}\` to cut the log there ` +
        `(records from ${seq} on are lost), or restore the file from a copy`,
    );
    this.seq = seq;
    this.offset = offset;
    this.reason = reason;
  }
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-](\d{2}):?(\d{2}))?)?$/;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const EXAMPLE = 'give e.g. 1200 or 2024-05-30T08:49:46Z';

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/**
 * The fields of an ISO-8601 time must name a real moment: Date.parse rolls 2022-02-30 over to
 * March 2 and would make a bound select records the user never meant.
 */
function checkTimeFields(m: RegExpExecArray, text: string, option: string): void {
  const [, y, mo, d, h, mi, sec, , oh, om] = m.map((v) => (v === undefined ? undefined : Number(v)));
  const year = y as number;
  const month = mo as number;
  const day = d as number;
  if (month < 1 || month > 12) throw new CqpError('USAGE', `${option} "${text}": no such date (there is no month ${month}); ${EXAMPLE}`);
  const days = daysIn(year, month);
  if (day < 1 || day > days) {
    throw new CqpError('USAGE', `${option} "${text}": no such date (${m[1]}-${m[2]} has ${days} days); ${EXAMPLE}`);
  }
  if ((h ?? 0) > 23 || (mi ?? 0) > 59 || (sec ?? 0) > 59 || (oh ?? 0) > 23 || (om ?? 0) > 59) {
    throw new CqpError('USAGE', `${option} "${text}": no such time of day (hours run 00–23, minutes and seconds 00–59); ${EXAMPLE}`);
  }
}

/** Parses a log position: a sequence number (`1200`) or an ISO-8601 append time; `option` names it in errors. */
export function parseLogPos(text: string, option = 'position'): LogPos {
  const t = text.trim();
  if (/^\d+$/.test(t)) {
    const seq = Number(t);
    if (!Number.isSafeInteger(seq)) throw new CqpError('USAGE', `${option} "${text}": sequence number too large`);
    return { seq };
  }
  if (NUMBER.test(t)) {
    throw new CqpError('USAGE', `${option} "${text}": a sequence number is a whole number from 1 (records are numbered 1, 2, 3 …); ${EXAMPLE}`);
  }
  const m = ISO_TIME.exec(t);
  if (m) {
    checkTimeFields(m, text, option);
    const time = Date.parse(t);
    if (!Number.isNaN(time)) return { time };
  }
  throw new CqpError('USAGE', `${option} "${text}" is neither a sequence number nor an ISO-8601 time; ${EXAMPLE}`);
}

/** How a bound reads in a message: as given, with the append time of its record when known. */
export function describeBound(text: string, appended?: number): string {
  return appended === undefined ? text.trim() : `${text.trim()} (appended ${new Date(appended).toISOString()})`;
}

/** The error for a --from that lies after the --until: no record can lie between them. */
export function boundsOutOfOrder(from: string, until: string): CqpError {
  return new CqpError('USAGE', `--from ${from} is after --until ${until}: no record lies between them; give a --from at or before the --until`);
}

/**
 * Parses `--from` and `--until` and refuses bounds that can select nothing by mistake: `--until 0`
 * (records are numbered from 1), and a `--from` after the `--until` when both are sequence numbers
 * or both times. A sequence number against a time is compared on the log (`checkBoundsOnLog`).
 */
export function parseLogBounds(from: string | undefined, until: string | undefined): { from: LogPos | undefined; until: LogPos | undefined } {
  const start = from === undefined ? undefined : parseLogPos(from, '--from');
  const end = until === undefined ? undefined : parseLogPos(until, '--until');
  if (end && 'seq' in end && end.seq === 0) {
    throw new CqpError('USAGE', `--until "${until}": there is no record 0 (records are numbered 1, 2, 3 …); give 1 or more`);
  }
  if (start && end && from !== undefined && until !== undefined) {
    const after = 'seq' in start ? 'seq' in end && start.seq > end.seq : 'time' in end && start.time > end.time;
    if (after) throw boundsOutOfOrder(describeBound(from), describeBound(until));
  }
  return { from: start, until: end };
}
