/**
 * A pipeline's plan: what config.ts makes of a pipeline file, every component resolved to the exact
 * command line the supervisor spawns.
 */
import { fileURLToPath } from 'node:url';
import type { RuntimeSettings } from '../core/runtime-options.js';

/** How a process is started: an executable and its arguments. */
export interface Command {
  file: string;
  args: string[];
  /** A cqp component: it reports readiness on CQP_READY_FD once its options are checked and files open. */
  signalsReady?: boolean;
}

/**
 * The files a component reads when it starts (its ReadFile options and the files they name), each with a
 * hash of its bytes as they were when the component was started: `cqp run` fills it in (read-files.ts),
 * and a reload replaces the component when one of them holds other bytes.
 */
export type FileHashes = Readonly<Record<string, string>>;

export interface SourcePlan {
  name: string;
  type: string;
  options: Record<string, unknown>;
  resumable: boolean;
  /** It reads its process's stdin: the supervisor hands it its own. */
  readsStdin: boolean;
  /** The group of workers whose input it shares (its definition's `groupOption`), when it is one of them. */
  group?: string | undefined;
  /** The command without `--resume` (the supervisor adds it when it starts the source). */
  command: Command;
  /** The files it reads, with their hashes (see FileHashes). */
  files?: FileHashes;
}

export interface StagePlan {
  name: string;
  /** The built-in filter, or undefined for a `run:` program. */
  filter: string | undefined;
  options: Record<string, unknown>;
  command: Command;
  /** A `run:` program's `onError` and `deadLetter`: the supervisor applies them to what it writes. */
  runtime?: RuntimeSettings;
  /** The files it reads, with their hashes (see FileHashes). */
  files?: FileHashes;
}

export interface SinkPlan {
  name: string;
  type: string;
  options: Record<string, unknown>;
  exactlyOnce: boolean;
  /** The file or database the sink keeps (the value of the option its definition names), if any. */
  store: string | undefined;
  /** It writes to its process's stdout, the supervisor's own: when that is closed, the pipeline stops. */
  writesStdout: boolean;
  where: string | undefined;
  /** The hidden `cqp filter where EXPR` in front of the sink, when it has `where:`. */
  whereCommand: Command | undefined;
  /**
   * Set when the sink reads a command log itself (`--read-log`) instead of the stages' output: beside a
   * sink that writes a command log, the sinks that follow logs read it (`follow`); a replay without
   * stages bounds the read.
   */
  logInput: LogInput | undefined;
  command: Command;
  /** The files it reads, with their hashes (see FileHashes). */
  files?: FileHashes;
}

export interface LogInput {
  path: string;
  /** Keep reading until stopped (`cqp run`), or end at the bounds in `args` (`cqp replay`). */
  follow: boolean;
  /** Added to the sink's command: `--read-log PATH` and `--follow` or `--from`/`--until`. */
  args: string[];
}

/** A validated pipeline: what `cqp run` starts and what a reload compares. */
export interface PipelinePlan {
  file: string;
  /** The YAML file's folder: relative paths resolve against it and stages run in it. */
  dir: string;
  name: string;
  text: string;
  source: SourcePlan;
  stages: StagePlan[];
  sinks: SinkPlan[];
}

/** The CLI the supervisor spawns stages with (`<package>/bin/cqp.js`, from `src/` or `dist/` alike). */
export function cliPath(): string {
  return fileURLToPath(new URL('../../bin/cqp.js', import.meta.url));
}

/** The command that runs `cqp ARGS` as a stage (the same command a user could type). */
export function cliCommand(args: string[]): Command {
  return { file: process.execPath, args: [cliPath(), ...args], signalsReady: true };
}
