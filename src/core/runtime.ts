import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable, Writable } from 'node:stream';
import type { LogEvent, LogReadOptions } from '../log/input.js';
import { pipeline } from 'node:stream/promises';
import { parseObjectLine } from './check-line.js';
import { CqpError, messageOf } from './errors.js';
import { stringifyEvent } from './json.js';
import { LineSplitter, type SplitLine } from './lines.js';
import { createPolicy, type ErrorMode, type ErrorPolicy } from './policy.js';
import { accept, advance, compareN, POSITION_KEY, splitStamp, stampJson, stripStamp, subPosition, takeStamp, type Position, type PositionMap } from './position.js';
import {
  KEEP,
  type FilterDefinition,
  type FilterResult,
  type JsonObject,
  type SinkDefinition,
  type SinkEvent,
  type SinkInstance,
  type SourceDefinition,
  type StageContext,
  type WorkerLink,
} from './component.js';

export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

/** How much a stage reads from a file at a time (see stdinStream in component-cli.ts for why 96 KiB). */
export const READ_CHUNK_BYTES = 96 * 1024;

/** Options every component takes besides its own. */
export interface RuntimeOptions {
  onError: ErrorMode;
  deadLetter?: string | undefined;
  maxLineBytes: number;
  /** Positions to resume after (sources only; given by the supervisor). */
  resume?: PositionMap | undefined;
  /**
   * Sinks only (`--read-log`): read the events from this command log instead of stdin, after the last
   * one the sink holds. One process instead of `cqp source log | cqp sink …`, and no stamps to add and cut.
   */
  readLog?: ({ path: string } & LogReadOptions) | undefined;
}

/**
 * How far a sink reading a log has got: events handed to it, events its error policy handled (skipped
 * or dead-lettered), and the last position read per source.
 */
export interface SinkProgress {
  in: number;
  errors: number;
  at: PositionMap;
  /** What the sink does besides (SinkInstance.activity). */
  activity?: string | undefined;
}

/**
 * What a stage has read and written so far, for `cqp run`'s counts; `errors`: events its error policy
 * handled; `at`: a source's last position written.
 */
export interface StageCounts {
  in: number;
  out: number;
  errors: number;
  at: PositionMap | undefined;
}

/** Where a stage reads and writes; the process's stdio unless a test or host says otherwise. */
export interface StageIo {
  input: Readable;
  output: Writable;
  warn: (message: string) => void;
  signal: AbortSignal;
  cwd: string;
  /** Called once the component is created: its options checked, its files open (see cqp run). */
  ready?: () => void;
  /** A sink reading a log (`--read-log`) calls this as it goes (at most every 100 ms) and at the end. */
  progress?: (progress: SinkProgress) => void;
  /** Kept up to date when given (under `cqp run`). */
  counts?: StageCounts | undefined;
  /** Under `cqp run`: given each event the error policy rejects, and why (mirrored while tapped). */
  rejected?: ((message: string, raw: string) => void) | undefined;
  /** True when the process feeding this one died: an unfinished last line is its half-written line. */
  upstreamLost?: () => boolean;
  /** Under `cqp run`: the supervisor, for a source reading its share of a group's input. */
  worker?: WorkerLink | undefined;
  /**
   * Under `cqp run` (filters): the barrier lines the supervisor writes into the input to cut the output
   * exactly there (stage-control.ts). Given each line that starts with the record separator; a barrier
   * line passes to the output as it is, at its place, neither read nor counted.
   */
  barrier?: { pass(text: string): boolean } | undefined;
  /**
   * A sink following a log (`--read-log --follow`): `listen` is given a function to call with the last
   * positions to read once they are known (the supervisor's shutdown); the sink then stops there, by
   * `stop`, as soon as it has read them, rather than at a signal sent after its next progress report.
   */
  until?: { listen: (stopAt: (target: PositionMap) => void) => void; stop: () => void } | undefined;
}

/** The last line of the input, unless it is the half-written line of a process that died. */
function lastLines(splitter: LineSplitter, io: StageIo): SplitLine[] {
  const tail = splitter.end();
  if (tail.length === 0 || !io.upstreamLost?.()) return tail;
  io.warn(`dropped an unfinished last line from a process that died (line ${tail[0]?.no ?? '?'})`);
  return [];
}

function contextFor(runtime: RuntimeOptions, io: StageIo): StageContext {
  // A sink reading a log names its bad events by the log and their seq, not by a stdin line.
  const input = runtime.readLog ? `${runtime.readLog.path} seq` : undefined;
  const counts = io.counts;
  const policy = createPolicy({
    mode: runtime.onError,
    deadLetter: runtime.deadLetter,
    warn: io.warn,
    ...(input ? { input } : {}),
    ...(counts ? { counted: (n: number) => (counts.errors = n) } : {}),
    ...(io.rejected ? { rejected: io.rejected } : {}),
  });
  const log = runtime.readLog ? { log: { location: runtime.readLog.path, follow: runtime.readLog.follow } } : {};
  return { policy, warn: io.warn, signal: io.signal, cwd: io.cwd, maxLineBytes: runtime.maxLineBytes, ...log, ...(io.worker ? { worker: io.worker } : {}) };
}

/**
 * Yields the chunks of `input` until it ends or `signal` aborts (then stops reading at once). Each read
 * gets a promise of its own: racing every read against one long-lived abort promise would pile up a
 * reaction per chunk on it, each keeping its chunk alive for as long as the stream runs.
 */
async function* untilAborted(input: Readable, signal: AbortSignal): AsyncGenerator<Buffer> {
  if (signal.aborted) return;
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  let stop: (() => void) | undefined;
  const onAbort = (): void => stop?.();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const next = await new Promise<IteratorResult<Buffer | string> | undefined>((resolve, reject) => {
        stop = () => resolve(undefined);
        iterator.next().then(resolve, reject);
      });
      stop = undefined;
      if (next === undefined || next.done || signal.aborted) {
        if (next && !next.done) yield toBuffer(next.value);
        return;
      }
      yield toBuffer(next.value);
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    input.pause();
  }
}

function toBuffer(chunk: Buffer | string): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
}

/**
 * Parses one line into an event and its stamp, or reports it as a bad line. The whole line is parsed
 * and the stamp, its last key, deleted from the object (cheaper than cutting the text first).
 */
function parseLine(line: SplitLine, policy: ErrorPolicy, maxLineBytes: number, exact: boolean): { event: JsonObject; position: Position | undefined } | undefined {
  const event = parseObjectLine(line, line.text, policy, maxLineBytes, undefined, exact);
  if (!event) return undefined;
  return { event, position: event[POSITION_KEY] === undefined ? undefined : takeStamp(event) };
}

/** The ASCII record separator, the first character of a barrier line (see StageIo.barrier). */
const RECORD_SEPARATOR = 0x1e;

function join(lines: string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
}

/** Runs a filter over NDJSON: stdin → process → stdout, one pipeline so backpressure holds. */
export async function runFilter(def: FilterDefinition, options: Record<string, unknown>, runtime: RuntimeOptions, io: StageIo): Promise<void> {
  const ctx = contextFor(runtime, io);
  const instance = await def.create(options, ctx);
  io.ready?.();
  const { policy } = ctx;
  const max = runtime.maxLineBytes;
  const exact = def.plainNumbers !== true;

  const serialise = (out: string[], value: unknown, position: Position | undefined, no: number, raw: string): void => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      policy.report(no, `${def.name} produced ${describe(value)}; expected an object`, raw);
      return;
    }
    // Serialising is part of processing one event: what it throws (a number JSON cannot hold, a stack
    // overflow on a structure built too deep) fails that event under the policy.
    let json: string;
    try {
      json = stringifyEvent(value);
    } catch (error) {
      policy.report(no, `${def.name}: ${messageOf(error)}`, raw);
      return;
    }
    out.push(position ? stampJson(json, position) : json);
  };

  const emit = (result: FilterResult, position: Position | undefined, line: SplitLine, out: string[]): void => {
    if (result === KEEP) {
      out.push(line.text);
    } else if (Array.isArray(result)) {
      if (result.length === 1) serialise(out, result[0], position, line.no, line.text);
      else result.forEach((item, k) => serialise(out, item, position && subPosition(position, k), line.no, line.text));
    } else if (result !== null && result !== undefined) {
      serialise(out, result, position, line.no, line.text);
    }
  };

  const failed = (line: SplitLine, error: unknown): void => {
    policy.report(line.no, `${def.name}: ${messageOf(error)}`, line.text);
  };

  // Synchronous unless the filter answers with a promise (async modules): no await per event.
  const processLine = (line: SplitLine, out: string[]): Promise<void> | undefined => {
    const parsed = parseLine(line, policy, max, exact);
    if (!parsed) return undefined;
    let result: FilterResult | Promise<FilterResult>;
    try {
      result = instance.process(parsed.event, line);
    } catch (error) {
      failed(line, error);
      return undefined;
    }
    if (result instanceof Promise) {
      return result.then(
        (r) => emit(r, parsed.position, line, out),
        (error: unknown) => failed(line, error),
      );
    }
    emit(result, parsed.position, line, out);
    return undefined;
  };

  // Under `fail`, the events before the bad line still go out, then the error ends the stage.
  const counts = io.counts;
  const barrier = io.barrier;
  const processLines = async (lines: SplitLine[]): Promise<{ text: string; error?: unknown }> => {
    const out: string[] = [];
    let barriers = 0;
    try {
      for (const line of lines) {
        if (barrier && line.text.charCodeAt(0) === RECORD_SEPARATOR && barrier.pass(line.text)) {
          out.push(line.text);
          barriers++;
          continue;
        }
        const pending = processLine(line, out);
        if (pending) await pending;
      }
    } catch (error) {
      return { text: join(out), error };
    } finally {
      if (counts) {
        counts.in += lines.length - barriers;
        counts.out += out.length - barriers;
      }
    }
    return { text: join(out) };
  };

  await pipeline(
    untilAborted(io.input, io.signal),
    async function* (chunks: AsyncIterable<Buffer>) {
      const splitter = new LineSplitter(max);
      for await (const chunk of chunks) {
        const { text, error } = await processLines(splitter.push(chunk));
        if (text) yield text;
        if (error) throw error;
      }
      const { text, error } = await processLines(lastLines(splitter, io));
      if (text) yield text;
      if (error) throw error;
    },
    io.output,
    { end: io.output !== process.stdout },
  );
}

/** Runs a source: its batches → stdout. */
export async function runSource(def: SourceDefinition, options: Record<string, unknown>, runtime: RuntimeOptions, io: StageIo): Promise<void> {
  const ctx = contextFor(runtime, io);
  const instance = await def.create(options, { ...ctx, resume: runtime.resume ?? {} });
  io.ready?.();
  const counts = io.counts;
  await pipeline(
    async function* () {
      for await (const batch of instance.batches()) {
        if (batch.lines.length > 0) {
          if (counts) count(counts, batch.lines);
          yield `${batch.lines.join('\n')}\n`;
        }
        if (batch.error !== undefined) throw batch.error;
        if (io.signal.aborted) break;
      }
    },
    io.output,
    { end: io.output !== process.stdout },
  );
}

/** Counts a source's lines and keeps the position of the last (one stamp read per batch). */
function count(counts: StageCounts, lines: string[]): void {
  counts.out += lines.length;
  const { position } = splitStamp(lines[lines.length - 1] as string);
  if (position) advance((counts.at ??= {}), position);
}

const MAX_SINK_BATCH = 4096;
/** How long a sink batch may wait for more input after its first event (ms). */
const LINGER_MS = 10;
/** How long to wait for the next chunk before writing what is in hand (ms). */
const LINGER_WAIT_MS = 1;

/** An event a sink is given: parsed already; its text without the stamp is cut only if a sink asks. */
class AcceptedEvent implements SinkEvent {
  private stripped: string | undefined;

  constructor(
    private readonly line: string,
    readonly no: number,
    readonly position: Position | undefined,
    private readonly parsed: JsonObject,
    /** False when the text carries no stamp (events read from a log come with their position apart). */
    private readonly stamped = position !== undefined,
  ) {}

  get text(): string {
    this.stripped ??= this.stamped ? stripStamp(this.line, this.parsed) : this.line;
    return this.stripped;
  }

  event(): JsonObject {
    return this.parsed;
  }
}

/** How often a sink reading a log reports its progress (ms), and every how many ticks it repeats itself. */
const PROGRESS_MS = 100;
const RESEND_TICKS = 10;

/**
 * What a sink reads: items (chunks of stdin, or batches of log events) and how each becomes accepted
 * events. `take` adds an item's events to the batch; `end` adds what the input held back at its end.
 */
interface SinkInput<T> {
  items: AsyncIterator<T>;
  take(item: T, batch: SinkEvent[]): void;
  end(batch: SinkEvent[]): void;
  /** True when a bad event with a position was skipped since the last `through()`. */
  skipped?(): boolean;
  /** The positions read so far, bad events included (see SinkInstance.write); clears `skipped`. */
  through?(): PositionMap;
}

/** Events a sink cannot place among the positions it keeps per part of their source: said with the sink and its input. */
function partsHeld(sink: string, log: string | undefined, code: 'CONFIG' | 'PARTS_HELD', error: unknown): unknown {
  if (!(error instanceof CqpError) || error.code !== 'PARTS_HELD') return error;
  return new CqpError(code, `${sink} sink, reading ${log ?? 'its input'}: ${error.message}`, { cause: error });
}

/** Runs a sink: stdin (or a log, `--read-log`) → batches of events → the sink, skipping events it already holds. */
export async function runSink(def: SinkDefinition, options: Record<string, unknown>, runtime: RuntimeOptions, io: StageIo): Promise<void> {
  const ctx = contextFor(runtime, io);
  // The log's bounds are checked before anything is opened; the log reader loads only when asked for.
  const readLog = runtime.readLog;
  const logInput = readLog ? await import('../log/input.js') : undefined;
  const logReader = readLog ? logInput?.sinkLogReader(readLog.path, readLog) : undefined;
  const instance = await def.create(options, ctx);
  const applied = instance.applied?.() ?? {};
  if (readLog && logInput) {
    // Positions it keeps per partition of that log cannot place the whole log's events: refused at start.
    await logInput.checkPartsAtStart(readLog.path, readLog, applied).catch(async (error: unknown) => {
      await instance.close().catch(() => undefined);
      throw partsHeld(def.name, readLog.path, 'CONFIG', error);
    });
  }
  io.ready?.();
  const { policy } = ctx;
  const max = runtime.maxLineBytes;
  const exact = def.plainNumbers !== true;
  // Events handed to the sink, and events read (a bad one is read, not handed on): a report goes out
  // whenever either has moved, or the count of bad events (an event the sink rejects while writing it).
  let accepted = 0;
  let read = 0;
  let reported = '';
  let ticks = 0;
  const report = (): void => {
    // Unchanged, the last report is still sent again now and then: one lost on a full pipe is not the last word.
    const activity = instance.activity?.();
    const now = `${read} ${policy.count} ${activity ?? ''}`;
    if (now === reported && ++ticks % RESEND_TICKS !== 0) return;
    reported = now;
    io.progress?.({ in: accepted, errors: policy.count, at: { ...applied }, ...(activity === undefined ? {} : { activity }) });
  };
  let input: SinkInput<Buffer> | SinkInput<LogEvent[]>;
  // The positions to stop after (see StageIo.until), checked as each batch is read and when they come.
  let until: PositionMap | undefined;
  const checkUntil = (): void => {
    if (until === undefined) return;
    if (Object.entries(until).every(([source, n]) => applied[source] !== undefined && compareN(applied[source] as string, n) >= 0)) io.until?.stop();
  };
  io.until?.listen((target) => {
    until = target;
    checkUntil();
  });
  if (logReader && readLog) {
    // A bad event skipped since the last write: the next write also stores how far the log was read.
    let skipped = false;
    const fromLog: SinkInput<LogEvent[]> = {
      items: logReader(applied, io.signal),
      take(events, batch) {
        for (const { text, position, scan } of events) {
          // Every event read advances `applied` at once (see below), a bad one too: progress reports
          // then reach the log's end even when its last event is skipped.
          if (!accept(applied, position)) continue;
          read++;
          const no = Number(position.n);
          const event = parseObjectLine({ text, no, start: 0, tooLong: 0 }, text, policy, max, undefined, exact, scan);
          if (!event) {
            skipped = true;
            continue;
          }
          batch.push(new AcceptedEvent(text, no, position, event, false));
          accepted++;
        }
        checkUntil();
      },
      end() {},
      skipped: () => skipped,
      through() {
        skipped = false;
        return { ...applied };
      },
    };
    input = fromLog;
  } else {
    const splitter = new LineSplitter(max);
    // Accepted events advance `applied` at once, so a repeat further on is skipped even while the
    // batch holding the first copy is still being written.
    const take = (lines: SplitLine[], batch: SinkEvent[]): void => {
      for (const line of lines) {
        const parsed = parseLine(line, policy, max, exact);
        if (!parsed) continue;
        if (parsed.position && !accept(applied, parsed.position)) continue;
        batch.push(new AcceptedEvent(line.text, line.no, parsed.position, parsed.event));
        accepted++;
        read++;
      }
      if (io.counts) io.counts.in = read;
    };
    const fromStdin: SinkInput<Buffer> = {
      items: untilAborted(io.input, io.signal),
      take: (chunk, batch) => take(splitter.push(chunk), batch),
      end: (batch) => take(lastLines(splitter, io), batch),
    };
    input = fromStdin;
  }
  const ticker = io.progress ? setInterval(report, PROGRESS_MS) : undefined;
  ticker?.unref();
  if (io.progress) io.progress({ in: 0, errors: 0, at: { ...applied } });
  let failed = true;
  try {
    await feedSink(instance, input as SinkInput<unknown>);
    failed = false;
  } catch (error) {
    // Events it cannot place among the positions it keeps: said with the sink and the input it reads.
    throw partsHeld(def.name, readLog?.path, 'PARTS_HELD', error);
  } finally {
    clearInterval(ticker);
    report();
    try {
      await instance.close().catch((error: unknown) => {
        if (!failed) throw error;
      });
    } finally {
      // Events the sink rejects as it commits what it was given (at close) are counted too.
      report();
    }
  }
}

/** Group commit: one write in flight; what arrives meanwhile becomes the next batch. */
async function feedSink<T>(instance: SinkInstance, input: SinkInput<T>): Promise<void> {
  let batch: SinkEvent[] = [];
  let inflight: Promise<void> | undefined;
  let writeError: unknown;
  // A sink that keeps positions is also told how far the input was read past bad events, even without
  // events to write; one that keeps none has nothing to store for them.
  const keepsPositions = instance.applied !== undefined;
  const startWrite = (): void => {
    if (inflight || writeError !== undefined) return;
    const through = keepsPositions && input.skipped?.() === true ? input.through?.() : undefined;
    if (batch.length === 0 && through === undefined) return;
    const current = batch;
    batch = [];
    inflight = instance.write(current, through).then(
      () => {
        inflight = undefined;
        startWrite();
      },
      (error: unknown) => {
        inflight = undefined;
        writeError = error;
      },
    );
  };
  const drain = async (): Promise<void> => {
    for (;;) {
      if (writeError !== undefined) throw writeError;
      if (!inflight) startWrite();
      if (!inflight) return;
      await inflight;
    }
  };
  // Under `fail`, the events before a bad one are written, then the error ends the sink.
  const take = async (add: () => void): Promise<void> => {
    try {
      add();
    } catch (error) {
      await drain();
      throw error;
    }
  };
  const { items } = input;
  let next = items.next();
  let batchStarted = 0;
  for (;;) {
    let read: IteratorResult<T>;
    try {
      read = await next;
    } catch (error) {
      // The input failed (a corrupt record, a read error): what was read before it is still written.
      await drain();
      throw error;
    }
    if (read.done) break;
    if (batch.length === 0) batchStarted = Date.now();
    await take(() => input.take(read.value, batch));
    next = items.next();
    // Linger: input already on its way joins this batch (fewer commits under load), for at most
    // LINGER_MS after the batch's first event, so at low rates an event still goes out within ms.
    if (batch.length < MAX_SINK_BATCH && Date.now() - batchStarted < LINGER_MS) {
      const more = await Promise.race([next.then(() => true, () => true), sleep(LINGER_WAIT_MS).then(() => false)]);
      if (more) continue;
    }
    startWrite();
    if (writeError !== undefined) throw writeError;
    // Backpressure: a full batch waits for the write in flight.
    if (batch.length >= MAX_SINK_BATCH && inflight) await inflight;
  }
  await take(() => input.end(batch));
  await drain();
}

/** Writes all of `text` to a stream, waiting for drain when its buffer is full. */
export async function writeAll(stream: Writable, text: string | Buffer): Promise<void> {
  if (!stream.write(text)) await once(stream, 'drain');
}

/** True for the error a closed downstream pipe gives (`| head -1`). */
export function isBrokenPipe(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

export { CqpError };
