import type { z } from 'zod';
import type { Position, PositionMap } from './position.js';
import type { ErrorPolicy } from './policy.js';

/** A parsed event: any JSON object. */
export type JsonObject = Record<string, unknown>;

/** One input line as the runtime hands it to a component. */
export interface Line {
  /** The line's text without its newline (and without a `\r`). */
  text: string;
  /** 1-based line number in the input stream. */
  no: number;
}

/** What every component receives besides its options. */
export interface StageContext {
  /** The error policy for bad lines and per-event failures. */
  policy: ErrorPolicy;
  /** Where warnings and progress go (stderr). */
  warn(message: string): void;
  /** Aborted on SIGINT/SIGTERM: stop reading, finish what is in hand. */
  signal: AbortSignal;
  /** Folder that relative paths in options resolve against. */
  cwd: string;
  /** `--max-line-bytes`: the longest input line accepted (sources that cut lines honour it). */
  maxLineBytes?: number;
  /** Under `cqp run` only: the supervisor, as a source that shares its input among workers needs it. */
  worker?: WorkerLink;
  /**
   * Sinks reading a command log (`--read-log`): where it is, and whether they follow it. A sink may read
   * it again itself, beside what it is given (the sqlite sink builds a changed view from it).
   */
  log?: { location: string; follow: boolean } | undefined;
}

/** What a source reading its share of a group's input asks of and tells the `cqp run` it runs under. */
export interface WorkerLink {
  /** The positions the pipeline's exactly-once sinks hold now, read from their stores (committed); undefined when none keeps positions. */
  sinksAt(): Promise<PositionMap | undefined>;
  /** The group it works in and the partitions it holds now (shown by /status and the status table). */
  holding(group: string, partitions: number[]): void;
}

/** Marker a filter returns to forward the input line's original bytes unchanged. */
export const KEEP = Symbol('keep');

/** A filter's answer for one event: keep as is, one or several events, or nothing (dropped). */
export type FilterResult = typeof KEEP | JsonObject | JsonObject[] | null | undefined;

export interface FilterInstance {
  /** Called for each event; may return a promise (async modules). Throwing fails this event only. */
  process(event: JsonObject, line: Line): FilterResult | Promise<FilterResult>;
}

/** Lines a source emits: NDJSON object texts, stamped with their positions when resumable. */
export interface SourceBatch {
  lines: string[];
  /** A failure (a bad line under `fail`) after these lines: the runtime writes them, then fails. */
  error?: unknown;
}

/** Builds a batch line by line; when `each` throws, the lines before the failure are kept with the error. */
export function collectBatch<T>(items: Iterable<T>, each: (item: T, lines: string[]) => void): SourceBatch {
  const lines: string[] = [];
  try {
    for (const item of items) each(item, lines);
  } catch (error) {
    return { lines, error };
  }
  return { lines };
}

export interface SourceInstance {
  /** Yields batches of output lines until the source ends or `ctx.signal` aborts. */
  batches(): AsyncIterable<SourceBatch>;
}

/** One event as a sink receives it: its text without the position stamp, and the stamp. */
export interface SinkEvent {
  text: string;
  no: number;
  position: Position | undefined;
  /** Parses the text on first use (sinks that store bytes never pay for it). */
  event(): JsonObject;
}

export interface SinkInstance {
  /** Positions already applied; events at or below them are skipped before `write`. */
  applied?(): PositionMap;
  /**
   * Writes one batch; resolves when the batch is stored as the sink promises (durably for log/sqlite).
   * `through`, when bad events were skipped since the last write: the positions the input has been read
   * to, those events included (never below the batch's own). A sink that stores positions stores these,
   * so it does not end short of its input when the last events were bad; the batch may then be empty.
   */
  write(batch: SinkEvent[], through?: PositionMap): Promise<void>;
  /** Flushes and releases resources. */
  close(): Promise<void>;
  /**
   * What the sink is doing besides writing what it is given, in a few words with its progress (a view
   * being rebuilt beside the live one), for the status `cqp run` shows; undefined when nothing.
   */
  activity?(): string | undefined;
}

/** What an option check gets besides the options: the folder relative paths resolve against. */
export interface CheckContext {
  cwd: string;
}

/**
 * Checks of the options that name files or code, one per option: each opens, loads or compiles what its
 * option names with the code `create()` uses, without processing an event, and throws a CqpError saying
 * what is wrong. `cqp lint` runs them, so it refuses what the component would refuse at start.
 */
export type OptionChecks<O> = {
  [K in keyof O]?: (value: NonNullable<O[K]>, options: O, ctx: CheckContext) => unknown;
};

/**
 * A file an option names that the component reads when it starts, as part of what it does (a views file,
 * a JSON Schema, a module), not as its data: `cqp run` watches it and replaces the component when its
 * bytes change, as when its options change.
 */
export interface ReadFile {
  /**
   * The files this file names that the component reads too (a views file's handler modules), as
   * absolute paths. Reads and validates the file: throws a CqpError naming the file, line and field
   * when it is not valid.
   */
  names?(file: string): Promise<string[]>;
}

/** The options of a component that name files it reads (see ReadFile); each is a path option too. */
export type ReadFiles<O> = {
  [K in keyof O]?: ReadFile;
};

interface ComponentBase<S extends z.ZodObject> {
  name: string;
  /**
   * True when the component never writes an event it changed nor stores a number's value (it forwards
   * or stores the original bytes): the reader may then give it numbers as the nearest double and skip
   * the per-line scan for numbers a double cannot carry.
   */
  plainNumbers?: boolean;
  /** One line for `cqp list`. */
  summary: string;
  /** A paragraph for `--help`. */
  description?: string;
  /** Options, one spelling everywhere: YAML `with:` keys are camelCase, CLI flags kebab-case. */
  options: S;
  /** An option that may also be given as the first positional argument (`where EXPR`). */
  positional?: keyof z.infer<S> & string;
  /** Example option sets; a test checks that each parses. */
  examples: Array<z.input<S>>;
  /** Checks of the options that name files or code (see OptionChecks); an option without one is checked by its schema only. */
  checks?: OptionChecks<z.infer<S>>;
  /** The options naming files the component reads when it starts (see ReadFile). */
  reads?: ReadFiles<z.infer<S>>;
}

export interface FilterDefinition<S extends z.ZodObject = z.ZodObject> extends ComponentBase<S> {
  kind: 'filter';
  create(options: z.infer<S>, ctx: StageContext): FilterInstance | Promise<FilterInstance>;
}

export interface SourceDefinition<S extends z.ZodObject = z.ZodObject> extends ComponentBase<S> {
  kind: 'source';
  /** True when the source stamps positions (`stdin` does not). */
  resumable: boolean;
  /** True when the source reads its process's stdin: `cqp run` hands it the supervisor's own. */
  readsStdin?: boolean;
  /**
   * The option naming the group of workers this source shares its input with (each `cqp run` of the
   * group reads its share). `cqp run` then sets the sinks' `SinkStore.sharedBy` option to the group.
   */
  groupOption?: string;
  create(options: z.infer<S>, ctx: StageContext & { resume: PositionMap }): SourceInstance | Promise<SourceInstance>;
}

/**
 * What `cqp replay` needs to build a sink's store anew beside the old one (`<file>.replay-<pid>`) and
 * rename it over the old one once the replay has succeeded.
 */
export interface StoreRebuild<O = Record<string, unknown>> {
  /** What the sink's file is when the sink never created it: empty (it had nothing to write); without this, a failure. */
  emptyWhenUnwritten?: boolean;
  /** Files the store keeps beside it, as suffixes of its path: the new file's go with it in the rename, the old file's are removed. */
  companions?: readonly string[];
  /** Makes the new file whole on its own before it is flushed and renamed (a database's WAL checkpointed into it). */
  complete?(temp: string): void | Promise<void>;
  /**
   * A boolean option of the sink that replay sets while the sink builds the new file: no reader opens
   * that file before the rename and a failed replay discards it, so the sink may write it the cheapest
   * way (the file is flushed to disk before the rename all the same).
   */
  building?: string;
  /**
   * A store that is not a file (a database schema): how replay builds it anew beside the target and
   * swaps it in. With this, the file fields above do not apply.
   */
  swap?(options: O): Promise<StoreSwap>;
}

/**
 * A store rebuilt blue/green by its own means: the sink writes into `temp` (its option `option` set to
 * it) while the replay holds the target's writer lock, and `commit` swaps the new store in atomically;
 * a replay that fails or is killed leaves the target as it was.
 */
export interface StoreSwap {
  /** The target and the new store, as messages name them. */
  target: string;
  temp: string;
  /** The option of the sink pointed at `temp`, and its value. */
  option: string;
  value: string;
  /** Removes what interrupted replays left for this target (returns their names); throws when a live replay builds it. */
  clearLeftovers(): Promise<string[]>;
  /** Takes the target's writer lock for the whole replay: a live writer is refused, and waits. */
  lock(): Promise<void>;
  /** Swaps the new store in, in one step. */
  commit(): Promise<void>;
  /** Drops the new store (the replay failed or was stopped). */
  discard(): Promise<void>;
  /** Gives up the lock and what the swap holds open. */
  release(): Promise<void>;
}

/**
 * The file or database a sink keeps, as the shared code needs to know it: `cqp run` resumes a source
 * from the positions stored in it, other sinks follow it when it is a command log, and `cqp replay`
 * locks it and rebuilds it.
 */
export interface SinkStore<O> {
  /** The option naming the store (a file path, resolved against the pipeline's folder). */
  option: keyof O & string;
  /** One writer at a time, held through the lock beside the file (`log/lock.ts`): a replay holds it while it rebuilds the file. */
  locked?: boolean;
  /** The store is a command log: sinks that follow the log (`followsLog`) read it rather than the stages' output. */
  commandLog?: boolean;
  /**
   * Exactly-once: the positions the store holds, read without taking its lock (a store not created yet
   * holds none). A sink without it keeps no positions and is at-least-once. `run.readsLog`: the sink reads
   * a command log itself (`--read-log`), as the positions it then resumes from may differ.
   */
  positions?(options: O, run?: { readsLog: boolean }): Promise<PositionMap>;
  /** `cqp replay` rebuilds the store blue/green; without this, the sink writes its store in place. */
  rebuild?: StoreRebuild<O>;
  /** The store is a SQLite database file: `cqp test` runs a test's `views:` queries on it. */
  sqlite?: boolean;
  /**
   * The option that lets the workers of a group write the store together (each for the partitions it
   * holds, fenced by the stored positions): `cqp run` sets it to the group's name when its source is
   * a group worker. Without it, a store has one writer.
   */
  sharedBy?: keyof O & string;
}

export interface SinkDefinition<S extends z.ZodObject = z.ZodObject> extends ComponentBase<S> {
  kind: 'sink';
  /** The file or database the sink keeps; none for a sink that only passes events on (stdout, kinesis). */
  store?: SinkStore<z.infer<S>>;
  /** True when, beside a sink that writes a command log, `cqp run` has this sink read that log (`--read-log --follow`) instead of the stages. */
  followsLog?: boolean;
  /** True when the sink writes to its process's stdout: `cqp run` gives it the supervisor's, and stops when that is closed. */
  writesStdout?: boolean;
  /** True when the sink publishes outside cqp (skipped by replay unless asked). */
  external?: boolean;
  /**
   * True when the sink may run inside the cqp process that would start it, as its own process would run
   * it: it reads no stdin and writes no stdout, and leaves the process (signals, exit, globals) alone. A
   * replay without stages whose one sink reads the log then runs that sink itself, and saves a process start.
   */
  inProcess?: boolean;
  create(options: z.infer<S>, ctx: StageContext): SinkInstance | Promise<SinkInstance>;
}

/** True when the sink stores positions with what it writes and so applies each event exactly once. */
export function isExactlyOnce(def: SinkDefinition): boolean {
  return def.store?.positions !== undefined;
}

export type ComponentDefinition = FilterDefinition | SourceDefinition | SinkDefinition;
export type ComponentKind = ComponentDefinition['kind'];

/** One kind's components, each under its CLI word, as a function that imports its file. */
export type ComponentFiles = Record<string, () => Promise<{ default: ComponentDefinition }>>;

/** Loads the named components of one kind's list (all of them without names), in its order; unknown names are skipped. */
export async function loadFrom(files: ComponentFiles, names: readonly string[] = Object.keys(files)): Promise<ComponentDefinition[]> {
  const loaded = await Promise.all(names.flatMap((name) => (Object.hasOwn(files, name) ? [files[name]?.()] : [])));
  return loaded.flatMap((m) => (m ? [m.default] : []));
}

/** Declares a filter with its option types inferred from the schema. */
export function defineFilter<S extends z.ZodObject>(d: Omit<FilterDefinition<S>, 'kind'>): FilterDefinition {
  return { kind: 'filter', ...d } as unknown as FilterDefinition;
}

export function defineSource<S extends z.ZodObject>(d: Omit<SourceDefinition<S>, 'kind'>): SourceDefinition {
  return { kind: 'source', ...d } as unknown as SourceDefinition;
}

export function defineSink<S extends z.ZodObject>(d: Omit<SinkDefinition<S>, 'kind'>): SinkDefinition {
  return { kind: 'sink', ...d } as unknown as SinkDefinition;
}
