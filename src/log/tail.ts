import type { FileHandle } from 'node:fs/promises';
import { advance, parsePosition, type PositionMap } from '../core/position.js';
import { HEADER_SIZE, recordSize } from './format.js';
import { RecordScanner } from './scanner.js';
import { checkpointHolds, readIndex, type LogIndex } from './sidecar.js';

/** State recovered by scanning a log: where it ends, what it holds. */
export interface LogTail {
  logId: string;
  /** Offset after the last good record. */
  end: number;
  last: { seq: number; offset: number; time: number };
  positions: PositionMap;
  entries: Array<[number, number, number]>;
  /** Checksum chain of every record up to `end` (see `chainRecord`). */
  chain: number;
  /** An incomplete last record (or zero-filled tail) found after `end`. */
  torn: { offset: number; bytes: number } | undefined;
}

/**
 * Finds the end of the log in `fh`: from the sidecar's checkpoint when it holds, otherwise from the
 * first record. With `verify` (a writer's open) every record the index covers is checked too, and
 * the index is used only when its checksum chain matches them (see the comment in `sidecar.ts`).
 * Throws LogCorruptError at a bad record.
 */
export async function scanTail(fh: FileHandle, path: string, logId: string, everyBytes: number, verify = false): Promise<LogTail> {
  const size = (await fh.stat()).size;
  const idx = await readIndex(path, logId);
  const tail: LogTail = {
    logId,
    end: HEADER_SIZE,
    last: { seq: 0, offset: HEADER_SIZE, time: 0 },
    positions: {},
    entries: [],
    chain: 0,
    torn: undefined,
  };
  if (idx && (await checkpointHolds(fh, idx, size)) && (!verify || (await vouches(fh, path, idx)))) {
    tail.end = idx.last.end;
    tail.last = { seq: idx.last.seq, offset: idx.last.offset, time: idx.last.time };
    tail.positions = { ...idx.positions };
    tail.entries = idx.entries.filter((e) => e[0] <= idx.last.seq);
    tail.chain = idx.chain;
  }
  const scanner = new RecordScanner(fh, path, tail.end, tail.last.seq + 1, undefined, tail.chain);
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
  tail.chain = scanner.chain;
  tail.torn = scanner.torn;
  return tail;
}

/**
 * True when the records from the first to the index's checkpoint all check out and are the ones the
 * index was written for. A bad record among them throws: the index's checkpoint holds after it, so
 * the damage is in the middle of the log, whatever the index says.
 */
async function vouches(fh: FileHandle, path: string, idx: LogIndex): Promise<boolean> {
  const scanner = new RecordScanner(fh, path, HEADER_SIZE, 1, 4 << 20);
  await scanner.verify(idx.last.end);
  return scanner.offset === idx.last.end && scanner.nextSeq === idx.last.seq + 1 && scanner.chain === idx.chain;
}
