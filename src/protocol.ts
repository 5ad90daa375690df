/**
 * Every message between `cqp run` and the cqp components it starts, in both directions, with its type.
 * They travel on one of two transports, as objects in both:
 *
 * - the control channel (Node IPC), given to the stages and sinks fed by the stages: `cut`, `output`,
 *   `barrier`, `upstream-lost` and `tap` one way; the answers, progress, `output-closed`, `locked` and
 *   `tapped` (what a tapped component mirrors) the other;
 * - the pipe named by CQP_READY_FD, given to every cqp component: `ready`; a sink reading the log
 *   (`--read-log`), which has no control channel, keeps it for its progress and `locked`, and hears
 *   `until` on it. There each message is one JSON line.
 *
 * Both sides build messages with the types below and read them with `componentMessage` and
 * `supervisorMessage`, which turn anything else into undefined.
 */
import type { Readable } from 'node:stream';
import type { PositionMap } from './core/position.js';

/**
 * What a component has done so far: lines read and written, the events its error policy handled
 * (skipped or dead-lettered) and, for a source or a sink reading the log, the last position per source.
 */
export interface Progress {
  in: number;
  out: number;
  errors: number;
  at: PositionMap;
  /** Lines it mirrored to the supervisor for `cqp tap` (none while nobody taps it). */
  mirrored?: number;
  /** What it does besides, in a few words (a sink rebuilding a view beside the live one, with its progress). */
  activity?: string | undefined;
}

/**
 * What a component mirrors while tapped (`cqp tap`): `outputs`, the lines it writes per second at most
 * (0: none; 'all': every one, for a tap that filters them); `errors`: the events its error policy rejects.
 */
export interface TapRequest {
  outputs: number | 'all';
  errors: boolean;
}

/** One event a component's error policy rejected, with why. */
export interface TappedError {
  reason: string;
  line: string;
}

/** What a component says to the supervisor. */
export type ComponentMessage =
  /** Its options are checked and its files open: a reload may swap it in. */
  | { cqp: 'ready' }
  /** Its counts, as it goes and at its end (unchanged counts are repeated now and then: it lives). */
  | ({ cqp: 'progress' } & Progress)
  /**
   * The answer to `cut`, and to an armed barrier that cuts (`id`: that barrier's) once the barrier line
   * reached the output: everything before it was written, and the output let go.
   */
  | { cqp: 'cut'; id?: string }
  /** The answer to `upstream-lost`. */
  | { cqp: 'ack' }
  /** Its output was closed under it (the process it wrote into exited): its exit that follows is no crash. */
  | { cqp: 'output-closed' }
  /** Another writer holds its log or database: a new process would be refused the same way. */
  | { cqp: 'locked'; message: string }
  /**
   * Mirrored while tapped: lines it wrote (as written, stamps and all) and events it rejected; `dropped`:
   * how many it left out since the last one because the channel was still busy (a tap never slows it).
   */
  | { cqp: 'tapped'; outputs: string[]; errors: TappedError[]; dropped: number }
  /** A source reading its share of a group's input asks where the exactly-once sinks stand (answered with `sinks-at`). */
  | { cqp: 'sinks-at'; id: string }
  /** A source reading its share of a group's input: the group and the partitions it holds now. */
  | { cqp: 'holding'; group: string; partitions: number[] };

/** What the supervisor says to a component. */
export type SupervisorMessage =
  /** Stop writing after the last whole line, flush, let the output go; answered with `cut`. */
  | { cqp: 'cut' }
  /** Write into the socket sent with this message from now on. */
  | { cqp: 'output' }
  /**
   * Watch the input for the barrier line `barrierLine(id)` (the supervisor writes it next) and pass it on
   * to the output at its place among the lines, uncounted. `cut`: the output cuts there (as `cut` does,
   * dropping the line) and answers `cut` with the id; otherwise the line goes out for the supervisor's
   * pump to find. Answered with `ack` once armed.
   */
  | { cqp: 'barrier'; id: string; cut: boolean }
  /** The process feeding this one died: an unfinished last line is its half-written line. Answered with `ack`. */
  | { cqp: 'upstream-lost' }
  /** A sink following the log: stop once the log has been read up to these positions (the shutdown). */
  | { cqp: 'until'; at: PositionMap }
  /** Mirror this from now on (`cqp tap`); `{ outputs: 0, errors: false }` stops the mirroring. */
  | ({ cqp: 'tap' } & TapRequest)
  /** The answer to `sinks-at`: the positions the exactly-once sinks hold (null: no sink keeps positions). */
  | { cqp: 'sinks-at'; id: string; at: PositionMap | null };

/** The answers a supervisor waits for. */
export type Reply = Extract<ComponentMessage, { cqp: 'cut' | 'ack' }>['cqp'];

type Fields = Record<string, unknown>;

function fields(value: unknown): Fields | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Fields) : undefined;
}

function positions(value: unknown): PositionMap | undefined {
  const map = fields(value);
  return map && Object.values(map).every((v) => typeof v === 'string') ? (map as PositionMap) : undefined;
}

const count = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) ? value : 0);

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function tappedErrors(value: unknown): TappedError[] {
  const out: TappedError[] = [];
  if (Array.isArray(value)) for (const v of value) {
    const f = fields(v);
    if (typeof f?.reason === 'string' && typeof f.line === 'string') out.push({ reason: f.reason, line: f.line });
  }
  return out;
}

/** What a barrier id may hold: it goes into a line of its own. */
const BARRIER_ID = /^[\w.-]+$/;

/**
 * The start of a barrier line: the ASCII record separator, which JSON text never holds unescaped, so a
 * barrier line can never be taken for an event (or an event for one).
 */
export const BARRIER_MARK = '\x1ecqp-barrier ';

/** The barrier line with this id, with its newline: written into a stage's input between two lines. */
export function barrierLine(id: string): string {
  return `${BARRIER_MARK}${id}\n`;
}

/** A message from a component, or undefined when `value` is none. */
export function componentMessage(value: unknown): ComponentMessage | undefined {
  const m = fields(value);
  switch (m?.cqp) {
    case 'cut':
      return typeof m.id === 'string' ? { cqp: 'cut', id: m.id } : { cqp: 'cut' };
    case 'ready':
    case 'ack':
    case 'output-closed':
      return { cqp: m.cqp };
    case 'progress':
      return {
        cqp: 'progress',
        in: count(m.in),
        out: count(m.out),
        errors: count(m.errors),
        at: positions(m.at) ?? {},
        mirrored: count(m.mirrored),
        ...(typeof m.activity === 'string' ? { activity: m.activity.slice(0, 200) } : {}),
      };
    case 'tapped':
      return { cqp: 'tapped', outputs: strings(m.outputs), errors: tappedErrors(m.errors), dropped: count(m.dropped) };
    case 'locked':
      return typeof m.message === 'string' ? { cqp: 'locked', message: m.message } : undefined;
    case 'sinks-at':
      return typeof m.id === 'string' ? { cqp: 'sinks-at', id: m.id } : undefined;
    case 'holding':
      return typeof m.group === 'string' && Array.isArray(m.partitions)
        ? { cqp: 'holding', group: m.group, partitions: m.partitions.filter((k): k is number => Number.isSafeInteger(k)) }
        : undefined;
    default:
      return undefined;
  }
}

/** A message from the supervisor, or undefined when `value` is none. */
export function supervisorMessage(value: unknown): SupervisorMessage | undefined {
  const m = fields(value);
  switch (m?.cqp) {
    case 'cut':
    case 'output':
    case 'upstream-lost':
      return { cqp: m.cqp };
    case 'barrier':
      return typeof m.id === 'string' && BARRIER_ID.test(m.id) ? { cqp: 'barrier', id: m.id, cut: m.cut === true } : undefined;
    case 'tap':
      return { cqp: 'tap', outputs: m.outputs === 'all' ? 'all' : count(m.outputs), errors: m.errors === true };
    case 'until': {
      const at = positions(m.at);
      return at ? { cqp: 'until', at } : undefined;
    }
    case 'sinks-at': {
      const at = m.at === null ? null : positions(m.at);
      return typeof m.id === 'string' && at !== undefined ? { cqp: 'sinks-at', id: m.id, at } : undefined;
    }
    default:
      return undefined;
  }
}

/** A message as one line of the CQP_READY_FD pipe. */
export function messageLine(message: ComponentMessage | SupervisorMessage): string {
  return `${JSON.stringify(message)}\n`;
}

/** Calls `receive` with each message read from a pipe of JSON lines; lines that are no message are skipped. */
export function readMessages<T>(pipe: Readable, read: (value: unknown) => T | undefined, receive: (message: T) => void): void {
  let partial = '';
  pipe.setEncoding('utf8');
  pipe.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        continue;
      }
      const message = read(value);
      if (message) receive(message);
    }
  });
}
