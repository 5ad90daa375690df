import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CqpError, messageOf } from '../core/errors.js';
import type { PositionMap } from '../core/position.js';
import { HEADER_SIZE, decodeHeader, type LogPos, type LogRecord } from './format.js';
import { RecordScanner } from './scanner.js';
import { readIndex, seekEntry } from './sidecar.js';
import { scanTail } from './tail.js';

export interface ReadLogOptions {
  /** First record to yield (inclusive). */
  from?: LogPos | undefined;
  /** Last record to yield (inclusive); reading ends after it, even when following. */
  until?: LogPos | undefined;
  /** Keep waiting for new records at the end until `signal` aborts. */
  follow?: boolean | undefined;
  signal?: AbortSignal | undefined;
  /** How often a follower looks for new records, ms (default 50). */
  pollMs?: number | undefined;
}

async function openLog(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint = code === 'ENOENT' ? 'check the path (a log is created by `cqp-sink log`)' : 'check its permissions';
    throw new CqpError('IO', `${path}: cannot open the command log (${messageOf(error)}); ${hint}`, { cause: error });
  }
}

async function readHeader(fh: FileHandle, path: string): Promise<string> {
  const head = Buffer.alloc(HEADER_SIZE);
  const { bytesRead } = await fh.read(head, 0, HEADER_SIZE, 0);
  return decodeHeader(head.subarray(0, bytesRead), path);
}

/** The log id of the command log at `path` (32 hex digits). */
export async function readLogId(path: string): Promise<string> {
  const fh = await openLog(path);
  try {
    return await readHeader(fh, path);
  } finally {
    await fh.close();
  }
}

/** Waits until `path` exists and holds a complete header (a writer is creating it); false if aborted. */
export async function waitForLog(path: string, signal?: AbortSignal, pollMs = 50): Promise<boolean> {
  for (;;) {
    if (signal?.aborted) return false;
    const fh = await open(path, 'r').catch(() => undefined);
    if (fh) {
      try {
        if ((await fh.stat()).size >= HEADER_SIZE) {
          await readHeader(fh, path);
          return true;
        }
      } finally {
        await fh.close();
      }
    }
    try {
      await sleep(pollMs, undefined, { signal });
    } catch {
      return false;
    }
  }
}

/** Summary of a log's end without taking the writer lock (a supervisor deciding where to resume). */
export async function readLogTail(path: string): Promise<{ logId: string; lastSeq: number; lastTime: number; end: number; positions: PositionMap }> {
  const fh = await openLog(path);
  try {
    const logId = await readHeader(fh, path);
    const tail = await scanTail(fh, path, logId, Number.MAX_SAFE_INTEGER);
    return { logId, lastSeq: tail.last.seq, lastTime: tail.last.time, end: tail.end, positions: tail.positions };
  } finally {
    await fh.close();
  }
}

/** The last position per source held by the log at `path`, read without the writer lock. */
export async function readLogApplied(path: string): Promise<PositionMap> {
  return (await readLogTail(path)).positions;
}

function before(r: LogRecord, from: LogPos): boolean {
  return 'seq' in from ? r.seq < from.seq : r.time < from.time;
}

function after(r: LogRecord, until: LogPos): boolean {
  return 'seq' in until ? r.seq > until.seq : r.time > until.time;
}

/**
 * A follower at the end of the file: waits until there is more to read than the scanner found (an
 * append), or a torn tail to read again (a writer finishing it, or cutting it and writing anew); false
 * when `signal` aborts. The end is the one the scanner's read found, not a size taken afterwards: an
 * append landing between that read and a later look would be counted as seen, and, being the last,
 * never read (a view would stop short of the log's end).
 */
async function grown(fh: FileHandle, path: string, scanner: RecordScanner, pollMs: number, signal: AbortSignal | undefined): Promise<boolean> {
  const known = scanner.offset + (scanner.torn?.bytes ?? 0);
  for (;;) {
    const { size } = await fh.stat();
    if (size < scanner.offset) {
      throw new CqpError('IO', `${path}: the log shrank below byte offset ${scanner.offset} while being read (was it repaired or replaced?); restart the reader`);
    }
    if (size !== known) return true;
    try {
      await sleep(pollMs, undefined, { signal });
    } catch {
      return false;
    }
    if (scanner.torn) return true;
  }
}

/**
 * Reads records in batches, verified, from `from` to `until` (inclusive). At a bad record it throws
 * CqpError CORRUPT naming its seq and byte offset, after yielding everything before it. Following,
 * it waits for new records (and for a partially written one to complete) until `signal` aborts.
 */
export async function* readLog(path: string, options: ReadLogOptions = {}): AsyncGenerator<LogRecord[]> {
  const { from, until, follow = false, signal, pollMs = 50 } = options;
  if (follow && !(await waitForLog(path, signal, pollMs))) return;
  const fh = await openLog(path);
  try {
    const logId = await readHeader(fh, path);
    const start = await seekEntry(fh, from ? await readIndex(path, logId) : undefined, from);
    const scanner = new RecordScanner(fh, path, start.offset, start.seq);
    let skipping = from !== undefined;
    for (;;) {
      if (signal?.aborted) return;
      const batch = await scanner.next();
      if (batch === null) {
        if (!follow) return;
        if (!(await grown(fh, path, scanner, pollMs, signal))) return;
        continue;
      }
      let out = batch;
      if (skipping && from) {
        let i = 0;
        while (i < out.length && before(out[i] as LogRecord, from)) i++;
        if (i === out.length) continue;
        out = i === 0 ? out : out.slice(i);
        skipping = false;
      }
      if (until && after(out[out.length - 1] as LogRecord, until)) {
        let j = 0;
        while (j < out.length && !after(out[j] as LogRecord, until)) j++;
        if (j > 0) yield out.slice(0, j);
        return;
      }
      yield out;
      // A sequence bound is reached at its record: no need to wait (following) for one past it.
      if (until && 'seq' in until && (out[out.length - 1] as LogRecord).seq >= until.seq) return;
    }
  } finally {
    await fh.close();
  }
}
