import type { FileHandle } from 'node:fs/promises';
import { advance, parsePosition, type PositionMap } from '../core/position.js';
import { HEADER_SIZE, recordSize } from './format.js';
import { RecordScanner } from './scanner.js';
import { checkpointHolds, readIndex } from './sidecar.js';

/** State recovered by scanning a log: where it ends, what it holds. */
export interface LogTail {
  logId: string;
  /** Offset after the last good record. */
  end: number;
  last: { seq: number; offset: number; time: number };
  positions: PositionMap;
  entries: Array<[number, number, number]>;
  /** An incomplete last record (or zero-filled tail) found after `end`. */
  torn: { offset: number; bytes: number } | undefined;
}

/**
 * Finds the end of the log in `fh`: from the sidecar's checkpoint when it holds, otherwise from the
 * first record. Throws LogCorruptError at a bad record.
 */
export async function scanTail(fh: FileHandle, path: string, logId: string, everyBytes: number, useIndex = true): Promise<LogTail> {
  const size = (await fh.stat()).size;
  const idx = useIndex ? await readIndex(path, logId) : undefined;
  const tail: LogTail = {
    logId,
    end: HEADER_SIZE,
    last: { seq: 0, offset: HEADER_SIZE, time: 0 },
    positions: {},
    entries: [],
    torn: undefined,
  };
  if (idx && (await checkpointHolds(fh, idx, size))) {
    tail.end = idx.last.end;
    tail.last = { seq: idx.last.seq, offset: idx.last.offset, time: idx.last.time };
    tail.positions = { ...idx.positions };
    tail.entries = idx.entries.filter((e) => e[0] <= idx.last.seq);
  }
  const scanner = new RecordScanner(fh, path, tail.end, tail.last.seq + 1);
  let lastEntry = tail.entries.at(-1)?.[1] ?? HEADER_SIZE;
  for (let batch = await scanner.next(); batch; batch = await scanner.next()) {
    let at = tail.end;
    for (const r of batch) {
      if (at - lastEntry >= everyBytes) {
        tail.entries.push([r.seq, at, r.time]);
        lastEntry = at;
      }
      if (r.position !== undefined) {
        const p = parsePosition(r.position);
        if (p) advance(tail.positions, p);
      }
      tail.last = { seq: r.seq, offset: at, time: r.time };
      at += recordSize(r.bytes.length + (r.position === undefined ? 0 : Buffer.byteLength(r.position)));
    }
    tail.end = scanner.offset;
  }
  tail.torn = scanner.torn;
  return tail;
}

