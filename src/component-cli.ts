import { fstatSync, read } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { Readable, type Writable } from 'node:stream';
import { Command, Option } from 'commander';
import { loadFrom, type ComponentDefinition, type ComponentFiles, type ComponentKind } from './core/component.js';
import { CqpError } from './core/errors.js';
import { commanderOptions, optionSpecs, parseOptions } from './core/options.js';
import type { PositionMap } from './core/position.js';
import { RUNTIME_OPTIONS, runtimeOptionsFor } from './core/runtime-options.js';
import { isBrokenPipe, READ_CHUNK_BYTES, runFilter, runSink, runSource, type RuntimeOptions, type SinkProgress, type StageIo } from './core/runtime.js';
import { suggestion } from './core/suggest.js';
import { cqpProgram, runMain } from './main.js';
import { resolveLogLocation } from './log/command-log.js';
import { messageLine, readMessages, supervisorMessage, type ComponentMessage } from './protocol.js';
import { sendToSupervisor, stageControl } from './stage-control.js';

function runtimeOptions(opts: Record<string, unknown>, kind: ComponentKind): RuntimeOptions {
  for (const option of runtimeOptionsFor(kind)) {
    const needed = RUNTIME_OPTIONS.find((o) => o.key === option.requires);
    if (needed && opts[option.key] !== undefined && opts[needed.key] === undefined) {
      throw new CqpError('USAGE', `${option.flag} applies to ${needed.flag} (give ${needed.flag} ${needed.value ?? ''} too)`);
    }
  }
  const max = Number(opts.maxLineBytes);
  if (!Number.isInteger(max) || max <= 0) throw new CqpError('USAGE', `--max-line-bytes: expected a positive whole number of bytes, got ${String(opts.maxLineBytes)}`);
  let resume: PositionMap | undefined;
  if (typeof opts.resume === 'string') {
    try {
      resume = JSON.parse(opts.resume) as PositionMap;
    } catch {
      throw new CqpError('USAGE', `--resume: expected a JSON object of positions, got ${opts.resume}`);
    }
  }
  const runtime: RuntimeOptions = { onError: opts.onError as RuntimeOptions['onError'], deadLetter: opts.deadLetter as string | undefined, maxLineBytes: max, resume };
  if (typeof opts.readLog === 'string') {
    runtime.readLog = { path: resolveLogLocation(opts.readLog), follow: opts.follow === true, from: opts.from as string | undefined, until: opts.until as string | undefined };
  }
  return runtime;
}

/** Adds the runtime options of the table in runtime-options.ts that `kind` takes. */
function addRuntimeOptions(cmd: Command, kind: ComponentKind): void {
  for (const spec of runtimeOptionsFor(kind)) {
    const option = new Option(spec.value ? `${spec.flag} ${spec.value}` : spec.flag, spec.description);
    if (spec.choices) option.choices(spec.choices);
    if (spec.default !== undefined) option.default(spec.default);
    if (spec.hidden) option.hideHelp();
    cmd.addOption(option);
  }
}

/** What a component's command line comes to: run it as this process, or hand it to a caller (readComponentCommand). */
type RunComponent = (def: ComponentDefinition, options: Record<string, unknown>, runtime: RuntimeOptions) => Promise<void>;

/**
 * Adds `cqp <kind> <name>` with flags generated from its schema: for the component the arguments name
 * (only its file is loaded), or for every component of the kind (`cqp filter --help`, a misspelt name).
 */
async function addKind(parent: Command, kind: ComponentKind, files: ComponentFiles, named: string | undefined, act: RunComponent): Promise<void> {
  const names = Object.keys(files);
  for (const def of await loadFrom(files, named !== undefined && names.includes(named) ? [named] : names)) {
    const cmd = parent.command(def.name).description(def.summary);
    if (def.positional) cmd.argument(`[${def.positional}]`, `the --${def.positional} option`);
    for (const option of commanderOptions(def.options, def.positional)) cmd.addOption(option);
    addRuntimeOptions(cmd, kind);
    const notes = [def.description, kind === 'source' ? ((def as { resumable?: boolean }).resumable ? 'Resumable: events carry their position.' : 'Not resumable: events carry no position.') : '']
      .filter(Boolean)
      .join('\n\n');
    if (notes) cmd.addHelpText('after', `\n${notes}\n`);
    cmd.action(async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const raw = { ...command.opts() } as Record<string, unknown>;
      if (def.positional && typeof args[0] === 'string') {
        if (raw[def.positional] !== undefined) throw new CqpError('USAGE', `give ${def.positional} once: as the argument or as --${def.positional}`);
        raw[def.positional] = args[0];
      }
      const runtime = runtimeOptions(raw, kind);
      const own = Object.fromEntries(optionSpecs(def.options).map((s) => [s.key, raw[s.key]]));
      const options = parseOptions(def, own, `cqp-${kind} ${def.name}`);
      await act(def, options, runtime);
    });
  }
  parent.on('command:*', (operands: string[]) => {
    const name = operands[0] ?? '';
    const hint = suggestion(name, names);
    throw new CqpError('USAGE', `unknown ${kind} "${name}"${hint} (cqp list shows them all)`);
  });
}

/** Runs one component as this process, on stdin/stdout, with SIGINT/SIGTERM draining. */
async function runComponent(def: ComponentDefinition, options: Record<string, unknown>, runtime: RuntimeOptions): Promise<void> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const supervisor = supervisorChannel(runtime.readLog !== undefined, stop);
  const control = stageControl(def.kind !== 'sink', def.kind === 'source', stop);
  // Anything more than ready goes on the control channel, or else on the pipe (a sink reading a log has no channel).
  const tell = async (message: ComponentMessage): Promise<void> => (control ? sendToSupervisor(message) : supervisor.send(message));
  const io = {
    input: stdinStream(),
    // A getter: sinks never touch stdout (see main in cli.ts).
    get output(): Writable {
      return control?.output ?? process.stdout;
    },
    warn: (m: string) => process.stderr.write(`${m}\n`),
    signal: controller.signal,
    cwd: process.cwd(),
    ready: supervisor.ready,
    progress: supervisor.progress,
    until: supervisor.until,
    counts: control?.counts,
    ...(control ? { rejected: (message: string, raw: string) => control.mirror.rejected(message, raw) } : {}),
    upstreamLost: () => control?.upstreamLost() ?? false,
    barrier: control?.barrier,
    worker: control?.worker,
  };
  try {
    if (def.kind === 'filter') await runFilter(def, options, runtime, io);
    else if (def.kind === 'source') await runSource(def, options, runtime, io);
    else await runSink(def, options, runtime, io);
  } catch (error) {
    // Said before the channels close. An output handed over after a cut (a socket) that closed:
    if (isBrokenPipe(error)) await tell({ cqp: 'output-closed' });
    // Another writer holds its store: restarting this component would be refused the same way.
    if (error instanceof CqpError && error.code === 'LOCKED') await tell({ cqp: 'locked', message: error.message });
    throw error;
  } finally {
    await control?.close();
    await supervisor.close();
  }
}

/**
 * Standard input; a regular file (`< events.ndjson`) is read in 96 KiB chunks: larger than a pipe's
 * 64 KiB, yet small enough that a chunk's decoded text and its output stay out of V8's large-object
 * space (each large object is an mmap and munmap of its own: larger reads were slower).
 */
function stdinStream(): Readable {
  try {
    if (fstatSync(0).isFile()) return fileStream(0);
  } catch {
    // No usable fd 0 (closed stdin): fall back to process.stdin, which reports it as an empty stream.
  }
  return process.stdin;
}

/**
 * The file open as `fd`, from where it is, READ_CHUNK_BYTES at a time; `fd` stays open. What
 * fs.createReadStream does, without loading Node's file streams and file handles (fs/promises,
 * readline): a few milliseconds of every stage's start.
 */
function fileStream(fd: number): Readable {
  return new Readable({
    highWaterMark: READ_CHUNK_BYTES,
    read() {
      const chunk = Buffer.allocUnsafeSlow(READ_CHUNK_BYTES);
      read(fd, chunk, 0, READ_CHUNK_BYTES, null, (error, bytes) => {
        if (error) this.destroy(error);
        else this.push(bytes > 0 ? chunk.subarray(0, bytes) : null);
      });
    },
  });
}

/** How long a stage waits at its end for its last reports to reach the supervisor (ms). */
const REPORT_FLUSH_MS = 2000;

interface SupervisorChannel {
  ready: () => void;
  progress: (p: SinkProgress) => void;
  /** Writes one message while the pipe is open. */
  send: (message: ComponentMessage) => void;
  until: StageIo['until'];
  /** Sends what is still queued (bounded wait) and lets the pipe go. */
  close: () => Promise<void>;
}

const NO_SUPERVISOR: SupervisorChannel = { ready: () => {}, progress: () => {}, send: () => {}, until: undefined, close: () => Promise.resolve() };

/**
 * The pipe a supervisor passes as CQP_READY_FD. A stage writes `ready` once its options are checked and
 * its files open: `cqp run` swaps a stage in on a reload only then (or refuses the reload when the stage
 * exits first), however slowly the machine starts processes. A sink reading a log (`--read-log`) keeps
 * the pipe: it reports how far it has read (the supervisor counts its events and knows when it has
 * reached the log's end), and stops when the supervisor is gone (the pipe ends), as a stage fed by the
 * supervisor would at the end of its input. At shutdown the supervisor sends back `until`, where the
 * log ends: the sink stops once it has read that far. The messages are protocol.ts's, one JSON line each.
 *
 * The pipe is held as one socket, never as a descriptor number: once it has ended or failed, the socket
 * closes the descriptor and refuses writes, so a report can never land in a file that was later opened
 * under the same number (a views database, a log).
 */
function supervisorChannel(readsLog: boolean, stop: () => void): SupervisorChannel {
  const fd = Number(process.env.CQP_READY_FD);
  if (!Number.isInteger(fd) || fd < 3) return NO_SUPERVISOR;
  let pipe: Socket;
  try {
    // node:net loads only here: a component started from a shell has no supervisor and skips its cost.
    const net = createRequire(import.meta.url)('node:net') as { Socket: typeof Socket };
    pipe = new net.Socket({ fd, readable: readsLog, writable: true });
  } catch {
    // Not a pipe or socket (a file, a closed descriptor): no supervisor listens there.
    return NO_SUPERVISOR;
  }
  // A failed write (the supervisor is gone, or fd 3 was opened read-only) closes the pipe; later
  // reports are dropped, not written elsewhere.
  pipe.on('error', () => {});
  // The pipe must not keep the process alive; a write in flight still does.
  pipe.unref();
  const send = (message: ComponentMessage): void => {
    if (pipe.writable) pipe.write(messageLine(message));
  };
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      if (pipe.destroyed) {
        resolve();
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        pipe.destroy();
        resolve();
      };
      const timer = setTimeout(done, REPORT_FLUSH_MS);
      pipe.once('close', done);
      if (pipe.writable) pipe.end(done);
      else done();
    }));
  if (!readsLog) {
    // Nothing more to say after `ready`: the pipe closes behind it.
    const ready = (): void => {
      send({ cqp: 'ready' });
      void close();
    };
    return { ready, progress: () => {}, send, until: undefined, close };
  }
  // `ready` goes out before the pipe is closed (writes keep their order).
  const ready = (): void => send({ cqp: 'ready' });
  // The supervisor may send `until` there: the positions to stop after (its shutdown). One that comes
  // before the sink listens (it is still opening its files) is kept for when it does.
  let stopAt: ((target: PositionMap) => void) | undefined;
  let told: PositionMap | undefined;
  readMessages(pipe, supervisorMessage, (message) => {
    if (message.cqp !== 'until') return;
    told = message.at;
    stopAt?.(message.at);
  });
  // Ended or broken, the supervisor is gone.
  pipe.on('end', stop).on('close', stop);
  return {
    ready,
    send,
    progress: (p) => send({ cqp: 'progress', in: p.in, out: 0, errors: p.errors, at: p.at, ...(p.activity === undefined ? {} : { activity: p.activity }) }),
    until: {
      listen: (listener) => {
        stopAt = listener;
        if (told) listener(told);
      },
      stop,
    },
    close,
  };
}

/**
 * Adds `cqp filter|source|sink NAME`, generated from the registry, for the kinds `files` has. Only the
 * kind the arguments name is loaded (`filter map …` loads map alone; `help filter` every filter).
 */
export async function addComponentCommands(program: Command, argv: readonly string[], files: Partial<Record<ComponentKind, ComponentFiles>>): Promise<void> {
  const kinds = [
    ['filter', 'run a filter: NDJSON stdin → stdout (cqp filter NAME --help)'],
    ['source', 'run a source: events → NDJSON stdout (cqp source KIND --help)'],
    ['sink', 'run a sink: NDJSON stdin → a destination (cqp sink KIND --help)'],
  ] as const;
  for (const [kind, description] of kinds) {
    const own = files[kind];
    if (!own) continue;
    const parent = program.command(kind).description(description);
    const [first, second, third] = argv[0] === 'help' ? argv.slice(1) : argv;
    if (first === kind) await addKind(parent, kind, own, argv[0] === 'help' ? third : second, runComponent);
  }
}

/** A component's definition with its options and runtime options, as read from its command line. */
export interface ComponentCall {
  def: ComponentDefinition;
  options: Record<string, unknown>;
  runtime: RuntimeOptions;
}

/**
 * Reads a component's command line (`['sink', 'sqlite', '--db', …]`) with the code its own process
 * reads it with, for a caller that runs the component inside its own process (a replay's one sink).
 * `files`: the registry (components.ts), passed in so that a component's process does not load it.
 */
export async function readComponentCommand(argv: readonly string[], files: Record<ComponentKind, ComponentFiles>): Promise<ComponentCall> {
  const kind = argv[0] as ComponentKind;
  let call: ComponentCall | undefined;
  const program = new Command('cqp').exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  await addKind(program.command(kind), kind, files[kind], argv[1], (def, options, runtime) => {
    call = { def, options, runtime };
    return Promise.resolve();
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CqpError) throw error;
    throw new CqpError('USAGE', `${argv.slice(0, 2).join(' ')}: ${(error as Error).message.replace(/^error: /, '')}`);
  }
  if (!call) throw new CqpError('USAGE', `not a component's command line: ${argv.join(' ')}`);
  return call;
}

/**
 * Entry point of a component's process (`cqp-filter …`, `cqp filter …`): `argv` starts with its kind,
 * and the program knows that kind's components alone, so the process loads no other code (see
 * build/bundle.mjs). Help, errors and exit codes are those of `cqp <kind>` in the full program.
 */
export function componentMain(argv: string[], kind: ComponentKind, files: ComponentFiles): Promise<void> {
  return runMain(argv, async (args) => {
    const program = cqpProgram();
    await addComponentCommands(program, args, { [kind]: files });
    return program;
  });
}
