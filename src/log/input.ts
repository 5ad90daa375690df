import { Worker } from 'node:worker_threads';
import { CqpError, messageOf, type CqpErrorCode } from '../core/errors.js';
import type { Position, PositionMap } from '../core/position.js';
import { checkParts, resumeAt } from '../core/position.js';
import { LogCorruptError, boundsOutOfOrder, describeBound, parseLogBounds, type LogPos, type LogRecord } from './format.js';
import { openCommandLog, type CommandLog } from './command-log.js';

/** Which stretch of a command log to read: `from`/`until` are a sequence number or an ISO-8601 append time. */
export interface LogReadOptions {
  from?: string | undefined;
  until?: string | undefined;
  follow: boolean;
}

/** One event of the log: its bytes as text (no stamp) and its position (`log:<logId>`, seq). */
export interface LogEvent {
  text: string;
  position: Position;
  /** scanJson's answer for the text, when the thread that read it found it (see logEventReaderInWorker). */
  scan?: number | undefined;
}

/** Reads the events of a log after what `resume` holds, batch by batch, until the end (or `signal`, following). */
export type LogEventReader = (resume: PositionMap, signal: AbortSignal) => AsyncGenerator<LogEvent[]>;

function bounds({ from, until }: LogReadOptions): { start: LogPos | undefined; end: LogPos | undefined } {
  const parsed = parseLogBounds(from, until);
  return { start: parsed.from, end: parsed.until };
}

/** The append time of record `seq`, when the log holds it and it checks out. */
async function appendTimeOf(log: CommandLog, seq: number): Promise<number | undefined> {
  if (seq < 1) return undefined;
  try {
    for await (const batch of log.read({ from: { seq }, until: { seq } })) return batch[0]?.time;
  } catch (error) {
    // A damaged log cannot say; the read that follows reports the damage where it is.
    if (error instanceof LogCorruptError) return undefined;
    throw error;
  }
  return undefined;
}

/**
 * Refuses a `--from` after the `--until` when one is a sequence number and the other an append time
 * (bounds of one kind are compared by `parseLogBounds`): the record at the sequence number says when
 * it was appended. A record the log does not hold (yet) decides nothing.
 */
export async function checkBoundsOnLog(log: CommandLog, { from, until }: { from?: string | undefined; until?: string | undefined }): Promise<void> {
  const { from: start, until: end } = parseLogBounds(from, until);
  if (!start || !end || from === undefined || until === undefined || ('seq' in start) === ('seq' in end)) return;
  if ('seq' in start && 'time' in end) {
    const time = await appendTimeOf(log, start.seq);
    if (time !== undefined && time > end.time) throw boundsOutOfOrder(describeBound(from, time), describeBound(until));
  } else if ('time' in start && 'seq' in end) {
    const time = await appendTimeOf(log, end.seq);
    if (time !== undefined && start.time > time) throw boundsOutOfOrder(describeBound(from), describeBound(until, time));
  }
}

/**
 * Refuses, before anything is read (a stage refusing at start is not restarted), a reader of the whole
 * log whose sinks keep that log's positions per partition (see checkParts); a log that cannot be
 * opened yet is left to the reading, which checks again as it starts.
 */
export async function checkPartsAtStart(file: string, options: LogReadOptions, resume: PositionMap): Promise<void> {
  if (!Object.keys(resume).some((key) => key.startsWith('log:') && key.includes('/'))) return;
  let source: string;
  try {
    const log = await openCommandLog(file);
    try {
      source = `log:${await log.logId()}`;
    } finally {
      await log.close();
    }
  } catch {
    return;
  }
  checkParts(resume, { source, n: firstSeq(bounds(options).start, resume[source]) });
}

/** The first sequence number a reader of the whole log reads given what its sinks hold ("0" when only a time bound says). */
function firstSeq(start: LogPos | undefined, done: string | undefined): string {
  const bound = start && 'seq' in start ? start.seq : 0;
  if (done === undefined) return String(bound);
  const at = resumeAt(done);
  return String(Math.max(Number(at.n) + (at.inclusive ? 0 : 1), bound));
}

/** The records of a log after what `resume` holds, within the bounds, with the log's source id. */
export async function* logRecords(file: string, options: LogReadOptions, resume: PositionMap, signal: AbortSignal): AsyncGenerator<{ source: string; records: LogRecord[] }> {
  const { start, end } = bounds(options);
  const log = await openCommandLog(file);
  try {
    if (options.follow && !(await log.waitFor(signal))) return;
    await checkBoundsOnLog(log, options);
    yield* recordsAfter(log, start, end, options.follow, resume, signal);
  } finally {
    await log.close();
  }
}

/** The records of an opened log after what `resume` holds, from `start` to `end`. */
async function* recordsAfter(
  log: CommandLog,
  start: LogPos | undefined,
  end: LogPos | undefined,
  follow: boolean,
  resume: PositionMap,
  signal: AbortSignal,
): AsyncGenerator<{ source: string; records: LogRecord[] }> {
  const source = `log:${await log.logId()}`;
  const done = resume[source];
  let readFrom = start;
  let minTime: number | undefined;
  if (done !== undefined) {
    // Resume right after what was applied (at it, when only part of its outputs were), or later
    // still when --from says so.
    const at = resumeAt(done);
    const next = Number(at.n) + (at.inclusive ? 0 : 1);
    if (!start || 'seq' in start) readFrom = { seq: Math.max(next, start?.seq ?? 0) };
    else {
      readFrom = { seq: next };
      minTime = start.time;
    }
  }
  // Positions kept per partition by a group's workers cannot place the whole log's events: refused before reading.
  checkParts(resume, { source, n: firstSeq(readFrom, undefined) });
  for await (let records of log.read({ from: readFrom, until: end, follow, signal })) {
    if (minTime !== undefined) {
      const first = records.findIndex((r) => r.time >= (minTime as number));
      if (first < 0) continue;
      records = records.slice(first);
      minTime = undefined;
    }
    yield { source, records };
  }
}

/**
 * The reader behind the `log` source. The bounds are checked here, at once, so that a bad `--from`
 * fails before the stage reports ready.
 */
export function logEventReader(file: string, options: LogReadOptions): LogEventReader {
  bounds(options);
  return async function* read(resume, signal) {
    for await (const { source, records } of logRecords(file, options, resume, signal)) {
      const events: LogEvent[] = new Array<LogEvent>(records.length);
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as LogRecord;
        events[i] = { text: r.bytes.toString('utf8'), position: { source, n: String(r.seq) } };
      }
      yield events;
    }
  };
}

/** What the read worker posts: a batch of records packed into transferred buffers, the end, or a failure. */
export type ReadWorkerMessage =
  | { kind: 'batch'; source: string; data: ArrayBuffer; ends: Uint32Array; seqs: Float64Array; scans: Uint8Array }
  | { kind: 'done' }
  | { kind: 'error'; code: CqpErrorCode | undefined; message: string };

/**
 * The same reader, reading and verifying the log on a worker thread (`read-worker.ts`): a sink reading
 * a log (`--read-log`) then parses and stores events while the next records are read and checked, as
 * `cqp source log | cqp sink …` would on two processes, without the pipe and the stamps between them.
 * The thread also scans each event for nesting and numbers (scanJson), which the sink's parse needs.
 */
export function logEventReaderInWorker(file: string, options: LogReadOptions): LogEventReader {
  bounds(options);
  return async function* read(resume, signal) {
    const worker = new Worker(new URL('./read-worker.js', import.meta.url), { workerData: { file, options, resume } });
    const queue: ReadWorkerMessage[] = [];
    let wake: (() => void) | undefined;
    // The reader resumes in a later turn of the event loop, not inside the message callback: Node
    // delivers a port's pending messages in one loop, and a reader resumed from it would keep the
    // process there (no signal, no timer) for as long as the worker keeps up.
    const push = (m: ReadWorkerMessage): void => {
      queue.push(m);
      const resume = wake;
      wake = undefined;
      if (resume) setImmediate(resume);
    };
    worker.on('message', push);
    worker.on('error', (error) => push({ kind: 'error', code: undefined, message: messageOf(error) }));
    worker.on('exit', () => push({ kind: 'error', code: undefined, message: 'the log reader thread stopped' }));
    const stop = (): void => worker.postMessage('stop');
    // A stop asked for before this point (during start-up) has already fired its event: it counts too.
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const m = queue.shift() as ReadWorkerMessage;
        if (m.kind === 'done') return;
        if (m.kind === 'error') throw new CqpError(m.code ?? 'IO', m.message);
        worker.postMessage('ack');
        const data = Buffer.from(m.data);
        const events: LogEvent[] = new Array<LogEvent>(m.ends.length);
        let start = 0;
        for (let i = 0; i < m.ends.length; i++) {
          const end = m.ends[i] as number;
          events[i] = { text: data.toString('utf8', start, end), position: { source: m.source, n: String(m.seqs[i]) }, scan: m.scans[i] };
          start = end;
        }
        yield events;
      }
    } finally {
      signal.removeEventListener('abort', stop);
      await worker.terminate();
    }
  };
}

/** Below this many events, a bounded read (`--from SEQ --until SEQ`) stays on the sink's own thread. */
const WORKER_MIN_EVENTS = 20_000;

/**
 * The reader for a sink reading a log: on a worker thread, except for a short stretch given by seq
 * (a short replay), where starting the thread and loading the reader into it would cost more time
 * than reading beside the sink saves.
 */
export function sinkLogReader(file: string, options: LogReadOptions): LogEventReader {
  const seq = (bound: string | undefined): number => (bound !== undefined && /^\d+$/.test(bound) ? Number(bound) : NaN);
  const short = !options.follow && seq(options.until) - (seq(options.from) || 1) < WORKER_MIN_EVENTS;
  return short ? logEventReader(file, options) : logEventReaderInWorker(file, options);
}

