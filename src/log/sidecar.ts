import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { PositionMap } from '../core/position.js';
import { HEADER_SIZE, peekRecord, readU64, type LogPos } from './format.js';

/**
 * The sidecar index `FILE.idx`: sparse record starts (seq, byte offset, append time) for seeking, and
 * a checkpoint for opening: the last record it covers, the positions applied up to it, and the
 * checksum chain of the records it covers (`chainRecord`: a CRC-32C of their stored CRCs).
 *
 * It is never trusted blindly. Readers re-check an entry before seeking to it and the checkpoint
 * before starting from it. A writer must not append to a log that is corrupt anywhere, and an index
 * cannot know that a byte flipped on disk after it was written, so a writer's open re-verifies every
 * record the index covers (both CRCs and the sequence, at checksum speed, without decoding them)
 * and takes the index's positions only when the chain of those records matches: an index left by a
 * copy of the log with another history, or one ahead of the file, is then ignored, never believed.
 * That costs one read of the log at each writer open (about the time of the full scan that an open
 * without an index does, see bench/log-open.mjs), and nothing while appending but four bytes of
 * CRC per record. The index also spares rebuilding the positions and entries.
 */
export interface LogIndex {
  format: 2;
  logId: string;
  /** Sparse record starts: [seq, offset, time], ascending. */
  entries: Array<[number, number, number]>;
  /** The last record covered (seq 0 when the log had none), where it starts and ends. */
  last: { seq: number; offset: number; end: number; time: number };
  /** Checksum chain of records 1 … last.seq. */
  chain: number;
  positions: PositionMap;
}

export function indexPath(logPath: string): string {
  return `${logPath}.idx`;
}

/** Reads the sidecar of `logPath` when it exists, parses, and belongs to `logId`. */
export async function readIndex(logPath: string, logId: string): Promise<LogIndex | undefined> {
  let text: string;
  try {
    text = await readFile(indexPath(logPath), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const idx = JSON.parse(text) as LogIndex;
    if (idx.format !== 2 || idx.logId !== logId || !Array.isArray(idx.entries) || typeof idx.last !== 'object') return undefined;
    const { seq, offset, end, time } = idx.last;
    if (![seq, offset, end, time].every((v) => Number.isSafeInteger(v) && v >= 0)) return undefined;
    if (!Number.isInteger(idx.chain) || idx.chain < 0 || idx.chain > 0xffffffff) return undefined;
    if (typeof idx.positions !== 'object' || idx.positions === null) return undefined;
    return idx;
  } catch {
    return undefined;
  }
}

/** Replaces the sidecar atomically (temp file, then rename). */
export async function writeIndex(logPath: string, idx: LogIndex): Promise<void> {
  const tmp = `${indexPath(logPath)}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(idx));
  await rename(tmp, indexPath(logPath));
}

export async function removeIndex(logPath: string): Promise<void> {
  await unlink(indexPath(logPath)).catch(() => undefined);
}

/** True when the checkpoint record of `idx` is in the file, intact, and where the index says. */
export async function checkpointHolds(fh: FileHandle, idx: LogIndex, size: number): Promise<boolean> {
  const { seq, offset, end, time } = idx.last;
  if (end > size) return false;
  if (seq === 0) return offset === HEADER_SIZE && end === HEADER_SIZE;
  if (offset < HEADER_SIZE || end <= offset || end - offset > 1 << 30) return false;
  const buf = Buffer.allocUnsafe(end - offset);
  const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
  if (bytesRead !== buf.length) return false;
  const peek = peekRecord(buf, 0, buf.length, seq);
  return peek.kind === 'record' && peek.size === buf.length && readU64(buf, 16) === time;
}

/** The latest indexed record start at or before `from` whose header checks out, else the first record. */
export async function seekEntry(fh: FileHandle, idx: LogIndex | undefined, from: LogPos | undefined): Promise<{ offset: number; seq: number }> {
  const start = { offset: HEADER_SIZE, seq: 1 };
  if (!idx || !from) return start;
  const points: Array<[number, number, number]> = [...idx.entries];
  if (idx.last.seq > 0) points.push([idx.last.seq, idx.last.offset, idx.last.time]);
  let best: [number, number, number] | undefined;
  for (const p of points) {
    // Several records may share one millisecond, so seek strictly before a time bound.
    const before = 'seq' in from ? p[0] <= from.seq : p[2] < from.time;
    if (before && (!best || p[0] > best[0])) best = p;
  }
  if (!best) return start;
  const head = Buffer.allocUnsafe(28);
  const { bytesRead } = await fh.read(head, 0, 28, best[1]);
  if (bytesRead < 28) return start;
  const peek = peekRecord(head, 0, 28, best[0]);
  // A header-only peek says "short" when the header checks out; then confirm the seq it holds.
  if (peek.kind !== 'short' || readU64(head, 8) !== best[0]) return start;
  return { offset: best[1], seq: best[0] };
}
