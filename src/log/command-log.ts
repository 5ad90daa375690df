/**
 * The command log as everything above it sees it: a location (a file path, or a URL such as
 * `nats://HOST:PORT/STREAM`) opened into one interface. The sinks, `--read-log`, replay and
 * `cqp log …` go through `openCommandLog` and never ask which implementation they hold.
 */
import { isAbsolute, resolve } from 'node:path';
import { CqpError } from '../core/errors.js';
import type { PositionMap } from '../core/position.js';
import type { WorkerLink } from '../core/component.js';
import type { LogRecord } from './format.js';
import type { LogEvent } from './input.js';
import type { ReadLogOptions } from './reader.js';
import type { LogStat, VerifyResult } from './tools.js';
import type { FsyncPolicy, LogWriter } from './writer.js';

/** What reading a share of a log takes: the group, where the sinks stood at start, and the supervisor to ask later. */
export interface ShareReadOptions {
  group: string;
  resume: PositionMap;
  signal: AbortSignal;
  warn(message: string): void;
  worker: WorkerLink | undefined;
}

/** What opening a log for appending takes. */
export interface OpenWriterOptions {
  fsync: FsyncPolicy;
  warn: (message: string) => void;
  /** Partitions of a log created by this open (1 when not given); a log that exists keeps its own. */
  partitions?: number | undefined;
}

/** Where a log ends, read without taking the writer's place. */
export interface LogTailInfo {
  logId: string;
  /** Sequence number of the last record (0 when the log is empty). */
  lastSeq: number;
  /** Append time of the last record (0 when the log is empty). */
  lastTime: number;
  /** Last position per source among the records. */
  positions: PositionMap;
}

/** One command log, wherever it is kept. */
export interface CommandLog {
  /** The location as given (a path made absolute, or the URL). */
  readonly location: string;
  /** True when the log exists (a writer has created it). */
  exists(): Promise<boolean>;
  /** Waits until the log exists and can be read; false when `signal` aborts first. */
  waitFor(signal?: AbortSignal): Promise<boolean>;
  /** The log's id: events read from it are positioned `log:<id>:<seq>`. */
  logId(): Promise<string>;
  /** Where the log ends, and the positions it holds. */
  tail(): Promise<LogTailInfo>;
  /** Records in batches from `from` to `until` (inclusive), following new appends when asked. */
  read(options?: ReadLogOptions): AsyncGenerator<LogRecord[]>;
  /** Takes the log's single-writer place and opens it for appending (creating it when missing). */
  openWriter(options: OpenWriterOptions): Promise<LogWriter>;
  stat(): Promise<LogStat>;
  verify(): Promise<VerifyResult>;
  /** Lets go of what reading the log holds (a connection to a server); a writer closes apart. */
  close(): Promise<void>;
  /**
   * A log whose partitions several readers share (a group of workers): reads this reader's share, each
   * partition in order and stamped as a source of its own, until `signal`. Absent for a log one
   * machine reads.
   */
  readShare?(options: ShareReadOptions): AsyncGenerator<LogEvent[]>;
}

const URL_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

/** True when `location` is a URL (`scheme://…`), not a file path. */
export function isLocationUrl(location: string): boolean {
  return URL_SCHEME.test(location);
}

/** A log location made absolute against `cwd` when it is a path; a URL stays as it is. */
export function resolveLogLocation(location: string, cwd: string = process.cwd()): string {
  if (isLocationUrl(location)) return location;
  return isAbsolute(location) ? location : resolve(cwd, location);
}

/**
 * The log kept at each kind of URL, loaded only when a location names it (a file log never loads a
 * server's client). A new place to keep a log is one row here and one class behind `CommandLog`.
 */
const URL_LOGS: Record<string, { example: string; load: (location: string) => Promise<CommandLog> }> = {
  nats: {
    example: 'nats://HOST:PORT/STREAM (JetStream)',
    load: async (location) => new (await import('./jetstream/log.js')).JetStreamCommandLog(location),
  },
};

/** Opens the command log at `location`: a file path (relative to `cwd`) or a URL one of `URL_LOGS` knows. */
export async function openCommandLog(location: string, cwd?: string): Promise<CommandLog> {
  const scheme = URL_SCHEME.exec(location)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    const { FileCommandLog } = await import('./file-log.js');
    return new FileCommandLog(resolveLogLocation(location, cwd));
  }
  const kind = Object.hasOwn(URL_LOGS, scheme) ? URL_LOGS[scheme] : undefined;
  if (!kind) {
    const known = Object.values(URL_LOGS).map((k) => `a ${k.example} URL`);
    throw new CqpError('USAGE', `${location}: a command log is a file path or ${known.join(' or ')}; "${scheme}://" is not one`);
  }
  return kind.load(location);
}
