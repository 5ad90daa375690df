import type { ComponentKind } from './component.js';
import { DEFAULT_MAX_LINE_BYTES } from './runtime.js';

/** How a pipeline file writes a runtime option's value: one of `choices`, a file path, or a positive count. */
export type RuntimeFileValue = 'choice' | 'path' | 'count';

/**
 * One option that components take besides their own. The CLI flags (`cqp filter|source|sink NAME`) and
 * the pipeline file's keys are both made from the table below, so a new runtime option is added there once.
 */
export interface RuntimeOptionSpec {
  /** The key in a pipeline file, and the name the parsed flag gets. */
  key: string;
  flag: `--${string}`;
  /** The value's placeholder in --help; absent for a switch. */
  value?: string;
  description: string;
  choices?: readonly string[];
  default?: string | number;
  /** The component kinds that take it. */
  kinds: readonly ComponentKind[];
  /** How a pipeline file gives it; absent when only cqp itself sets it (resuming a source, a sink reading a log). */
  file?: RuntimeFileValue;
  /** The supervisor applies it to what a `run:` program writes, too. */
  programs?: boolean;
  /** Only meaningful beside this other option (its key). */
  requires?: string;
  /** Set by `cqp run`, not by users: left out of --help. */
  hidden?: boolean;
}

const EVERY_KIND = ['source', 'filter', 'sink'] as const;

const TABLE = [
  {
    key: 'onError',
    flag: '--on-error',
    value: '<mode>',
    description: 'what to do with a bad line or a rejected event',
    choices: ['fail', 'skip', 'dead-letter'],
    default: 'fail',
    kinds: EVERY_KIND,
    file: 'choice',
    programs: true,
  },
  {
    key: 'deadLetter',
    flag: '--dead-letter',
    value: '<file>',
    description: 'with --on-error dead-letter: append {"line","error","raw"} records here',
    kinds: EVERY_KIND,
    file: 'path',
    programs: true,
  },
  {
    key: 'maxLineBytes',
    flag: '--max-line-bytes',
    value: '<n>',
    description: 'longest line accepted; longer lines are bad lines',
    default: DEFAULT_MAX_LINE_BYTES,
    kinds: EVERY_KIND,
    file: 'count',
  },
  { key: 'resume', flag: '--resume', value: '<json>', description: 'positions to resume after (set by cqp run)', kinds: ['source'], hidden: true },
  {
    key: 'readLog',
    flag: '--read-log',
    value: '<log>',
    description: 'read the events from this command log (a file, or nats://HOST:PORT/STREAM) instead of stdin, after the last one the sink holds',
    kinds: ['sink'],
  },
  { key: 'follow', flag: '--follow', description: 'with --read-log: keep reading new appends until stopped', kinds: ['sink'], requires: 'readLog' },
  {
    key: 'from',
    flag: '--from',
    value: '<pos>',
    description: 'with --read-log: the first event to read (a seq or an ISO-8601 append time)',
    kinds: ['sink'],
    requires: 'readLog',
  },
  {
    key: 'until',
    flag: '--until',
    value: '<pos>',
    description: 'with --read-log: the last event to read (a seq or an ISO-8601 append time)',
    kinds: ['sink'],
    requires: 'readLog',
  },
] as const satisfies readonly RuntimeOptionSpec[];

/** Every runtime option, in --help order. */
export const RUNTIME_OPTIONS: readonly RuntimeOptionSpec[] = TABLE;

type FileOption = Extract<(typeof TABLE)[number], { file: RuntimeFileValue }>;
type FileValue<S> = S extends { choices: readonly (infer C)[] } ? C : S extends { file: 'count' } ? number : string;

/** The runtime options a pipeline file gives a component or a `run:` program (paths resolved). */
export type RuntimeSettings = { [S in FileOption as S['key']]?: FileValue<S> };

/** The runtime options a component kind takes. */
export function runtimeOptionsFor(kind: ComponentKind): RuntimeOptionSpec[] {
  return RUNTIME_OPTIONS.filter((o) => o.kinds.includes(kind));
}

/** The runtime options a pipeline file may give. */
export const FILE_RUNTIME_OPTIONS: ReadonlyArray<RuntimeOptionSpec & { file: RuntimeFileValue }> = RUNTIME_OPTIONS.filter(
  (o): o is RuntimeOptionSpec & { file: RuntimeFileValue } => o.file !== undefined,
);

/** The flags that pass pipeline-file settings on to a component's command line. */
export function runtimeArgv(settings: RuntimeSettings): string[] {
  const values = settings as Record<string, string | number | undefined>;
  return FILE_RUNTIME_OPTIONS.flatMap((o) => (values[o.key] === undefined ? [] : [o.flag, String(values[o.key])]));
}
