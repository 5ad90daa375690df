import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { CqpError } from '../core/errors.js';
import { crc32c } from './crc32c.js';
import { MAX_BODY, RECORD_HEAD, RECORD_OVERHEAD } from './format.js';
import { acquireLock } from './lock.js';
import { removeIndex } from './sidecar.js';
import { logVerify } from './tools.js';

/** How much is read at once while looking for the next record head after a damaged one. */
const RESYNC_CHUNK = 1 << 20;

export interface RepairResult {
  /** True when something was (or, with `dryRun`, would be) cut. */
  cut: boolean;
  /** Records kept. */
  kept: number;
  /** Where the log is cut, the bytes removed, the first lost seq and why. */
  offset?: number;
  bytes?: number;
  firstLostSeq?: number;
  reason?: string;
  /** Records in the cut part, as far as their heads can be told apart (the bad one included). */
  records?: number;
  /** The file that keeps the cut bytes (`FILE.cut-<time>`); undefined on a dry run. */
  savedTo?: string;
}

export interface RepairOptions {
  /** Say what would be cut; change nothing. */
  dryRun?: boolean;
  /** The time in the name of the file that keeps the cut part (tests fix it). */
  now?: Date;
}

/** Whether the 28 bytes at `at` are a record head whose own checksum checks out and whose length is possible. */
function headAt(buf: Buffer, at: number): number | undefined {
  if (buf.readUInt32LE(at + 24) !== crc32c(buf, at, at + 24)) return undefined;
  const bodyLen = buf.readUInt32LE(at);
  return bodyLen <= MAX_BODY && buf.readUInt16LE(at + 4) <= bodyLen ? bodyLen : undefined;
}

/** The offset of the next record head at or after `from` (before `end`), or `end` when there is none. */
async function nextHead(fh: FileHandle, from: number, end: number): Promise<number> {
  const buf = Buffer.alloc(RESYNC_CHUNK + RECORD_HEAD);
  for (let at = from; at + RECORD_HEAD <= end; at += RESYNC_CHUNK) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - at), at);
    for (let i = 0; i + RECORD_HEAD <= bytesRead && i < RESYNC_CHUNK; i++) if (headAt(buf, i) !== undefined) return at + i;
  }
  return end;
}

/**
 * Counts the records between `start` and `end`: each head whose checksum checks out gives the record's
 * length, so records with a damaged body are still told apart; after a damaged head (its length unknown)
 * the count resumes at the next head that checks out. A record cut short at the end counts as one.
 */
async function countRecords(fh: FileHandle, start: number, end: number): Promise<number> {
  const head = Buffer.alloc(RECORD_HEAD);
  let count = 0;
  for (let at = start; at < end; count++) {
    const { bytesRead } = await fh.read(head, 0, RECORD_HEAD, at);
    const bodyLen = bytesRead === RECORD_HEAD ? headAt(head, 0) : undefined;
    at = bodyLen === undefined ? await nextHead(fh, at + 1, end) : at + RECORD_OVERHEAD + bodyLen;
  }
  return count;
}

/** `events.log.cut-20261130T152001Z`: beside the log, named by the time of the repair. */
export function cutFileName(path: string, now: Date): string {
  return `${path}.cut-${now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/[-:]/g, '')}`;
}

/**
 * Cuts the log at its first bad record (or torn tail) and drops the index; takes the writer lock. What
 * is cut is first copied, durably, to `FILE.cut-<time>` beside the log: a single flipped byte in an old
 * record would otherwise throw away every record after it, with no way back. With `dryRun` it only
 * says what it would cut (without the lock, so it also answers while a writer runs).
 */
export async function logRepair(path: string, options: RepairOptions = {}): Promise<RepairResult> {
  const lock = options.dryRun ? undefined : acquireLock(path, { create: false });
  try {
    const result = await logVerify(path);
    if (result.firstBad?.offset === 0) {
      throw new CqpError('CORRUPT', `${path}: the file header is bad (${result.firstBad.reason}); repair cannot cut a log whose header is lost`);
    }
    const cutAt = result.firstBad?.offset ?? result.torn?.offset;
    if (cutAt === undefined) return { cut: false, kept: result.count };
    const fh = await open(path, options.dryRun ? 'r' : 'r+');
    try {
      const size = (await fh.stat()).size;
      const found: RepairResult = {
        cut: true,
        kept: result.count,
        offset: cutAt,
        bytes: size - cutAt,
        firstLostSeq: result.count + 1,
        reason: result.firstBad?.reason ?? 'incomplete last record',
        records: await countRecords(fh, cutAt, size),
      };
      if (options.dryRun) return found;
      const savedTo = cutFileName(path, options.now ?? new Date());
      await saveCut(path, cutAt, size, savedTo);
      await fh.truncate(cutAt);
      await fh.sync();
      await removeIndex(path);
      return { ...found, savedTo };
    } finally {
      await fh.close();
    }
  } finally {
    lock?.release();
  }
}

/** Copies bytes `start`..`end` of `path` to a new file `to` and makes it durable before anything is cut. */
async function saveCut(path: string, start: number, end: number, to: string): Promise<void> {
  try {
    // `wx`: an earlier repair's file of the same second is never overwritten.
    await pipeline(createReadStream(path, { start, end: end - 1 }), createWriteStream(to, { flags: 'wx' }));
    const saved = await open(to, 'r');
    try {
      await saved.sync();
    } finally {
      await saved.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') await rm(to, { force: true });
    throw new CqpError('IO', `${to}: cannot keep the part of the log that would be cut (${(error as Error).message}); nothing was cut; free some space or check the folder, then repair again`, { cause: error });
  }
}
