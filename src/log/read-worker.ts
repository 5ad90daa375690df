/**
 * The worker thread behind `logEventReaderInWorker`: reads and verifies log records and posts them in
 * packed batches (the bytes in one transferred buffer), at most MAX_UNACKED ahead of the reader, each
 * event with what scanJson finds in it (the sink then parses without scanning).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CqpError, messageOf } from '../core/errors.js';
import { scanJson } from '../core/json.js';
import type { PositionMap } from '../core/position.js';
import { logRecords, type LogReadOptions, type ReadWorkerMessage } from './input.js';

const MAX_UNACKED = 4;

const { file, options, resume } = workerData as { file: string; options: LogReadOptions; resume: PositionMap };
const port = parentPort;
const controller = new AbortController();
let unacked = 0;
let wake: (() => void) | undefined;
port?.on('message', (m: string) => {
  if (m === 'stop') controller.abort();
  else if (m === 'ack') unacked--;
  wake?.();
});

function post(message: ReadWorkerMessage, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

try {
  for await (const { source, records } of logRecords(file, options, resume, controller.signal)) {
    let total = 0;
    for (const r of records) total += r.bytes.length;
    const data = new ArrayBuffer(total);
    const bytes = new Uint8Array(data);
    const ends = new Uint32Array(records.length);
    const seqs = new Float64Array(records.length);
    const scans = new Uint8Array(records.length);
    let at = 0;
    records.forEach((r, i) => {
      bytes.set(r.bytes, at);
      at += r.bytes.length;
      ends[i] = at;
      seqs[i] = r.seq;
      // The scan looks at ASCII characters only (quotes, brackets, digits), which UTF-8 keeps as
      // single bytes: the bytes read as Latin-1 (one character each, no decoding) give the same answer.
      scans[i] = scanJson(r.bytes.toString('latin1'));
    });
    post({ kind: 'batch', source, data, ends, seqs, scans }, [data, ends.buffer, seqs.buffer, scans.buffer]);
    unacked++;
    while (unacked >= MAX_UNACKED && !controller.signal.aborted) await new Promise<void>((resolve) => (wake = resolve));
    if (controller.signal.aborted) break;
  }
  post({ kind: 'done' });
} catch (error) {
  post({ kind: 'error', code: error instanceof CqpError ? error.code : undefined, message: messageOf(error) });
}
