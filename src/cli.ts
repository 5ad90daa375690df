import { createReadStream, fstatSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { Command, Option } from 'commander';
import type { ComponentDefinition, ComponentKind } from './core/component.js';
import { CqpError, exitCodeFor, messageOf } from './core/errors.js';
import { commanderOptions, optionSpecs, parseOptions } from './core/options.js';
import { componentNames, registry } from './core/registry.js';
import { DEFAULT_MAX_LINE_BYTES, isBrokenPipe, runFilter, runSink, runSource, type RuntimeOptions } from './core/runtime.js';
import { suggestion } from './core/suggest.js';
import type { PositionMap } from './core/position.js';

const KIND_WORD: Record<ComponentKind, string> = { filter: 'filter', source: 'source', sink: 'sink' };

function runtimeOptions(opts: Record<string, unknown>): RuntimeOptions {
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
  return { onError: opts.onError as RuntimeOptions['onError'], deadLetter: opts.deadLetter as string | undefined, maxLineBytes: max, resume };
}

function addRuntimeOptions(cmd: Command, kind: ComponentKind): void {
  cmd.addOption(new Option('--on-error <mode>', 'what to do with a bad line or a rejected event').choices(['fail', 'skip', 'dead-letter']).default('fail'));
  cmd.addOption(new Option('--dead-letter <file>', 'with --on-error dead-letter: append {"line","error","raw"} records here'));
  cmd.addOption(new Option('--max-line-bytes <n>', 'longest line accepted; longer lines are bad lines').default(DEFAULT_MAX_LINE_BYTES));
  if (kind === 'source') cmd.addOption(new Option('--resume <json>', 'positions to resume after (set by cqp run)').hideHelp());
}

/** Adds `cqp <kind> <name>` for every component of a kind, with flags generated from its schema. */
function addComponentCommands(parent: Command, kind: ComponentKind): void {
  for (const def of registry[kind]) {
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
      const runtime = runtimeOptions(raw);
      const own = Object.fromEntries(optionSpecs(def.options).map((s) => [s.key, raw[s.key]]));
      const options = parseOptions(def, own, `cqp-${KIND_WORD[kind]} ${def.name}`);
      await runComponent(def, options, runtime);
    });
  }
  parent.on('command:*', (operands: string[]) => {
    const name = operands[0] ?? '';
    const hint = suggestion(name, componentNames(kind));
    throw new CqpError('USAGE', `unknown ${kind} "${name}"${hint} (cqp list shows them all)`);
  });
}

/** Runs one component as this process, on stdin/stdout, with SIGINT/SIGTERM draining. */
async function runComponent(def: ComponentDefinition, options: Record<string, unknown>, runtime: RuntimeOptions): Promise<void> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const io = { input: stdinStream(), output: process.stdout, warn: (m: string) => process.stderr.write(`${m}\n`), signal: controller.signal, cwd: process.cwd() };
  if (def.kind === 'filter') await runFilter(def, options, runtime, io);
  else if (def.kind === 'source') await runSource(def, options, runtime, io);
  else await runSink(def, options, runtime, io);
}

/** Standard input; a regular file (`< events.ndjson`) is read in large chunks rather than 64 KiB ones. */
function stdinStream(): Readable {
  try {
    if (fstatSync(0).isFile()) return createReadStream('', { fd: 0, highWaterMark: 1 << 20, autoClose: false });
  } catch {
    // No usable fd 0 (closed stdin): fall back to process.stdin, which reports it as an empty stream.
  }
  return process.stdin;
}

function listCommand(): void {
  const width = Math.max(...Object.values(registry).flat().map((c) => c.name.length));
  for (const kind of ['source', 'filter', 'sink'] as const) {
    process.stdout.write(`${kind}s:\n`);
    for (const c of registry[kind]) process.stdout.write(`  ${c.name.padEnd(width)}  ${c.summary}\n`);
  }
}

/** Builds the `cqp` command line. */
export function buildProgram(): Command {
  const program = new Command('cqp')
    .description('stream processor for NDJSON events: filters, a command log, SQLite views, replay, hot reload')
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  program.command('list').description('list every source, filter and sink').action(listCommand);
  addComponentCommands(program.command('filter').description('run a filter: NDJSON stdin → stdout (cqp filter NAME --help)'), 'filter');
  addComponentCommands(program.command('source').description('run a source: events → NDJSON stdout (cqp source KIND --help)'), 'source');
  addComponentCommands(program.command('sink').description('run a sink: NDJSON stdin → a destination (cqp sink KIND --help)'), 'sink');
  addLogCommands(program);
  program
    .command('query')
    .description('run SQL against a views database (read-only) and print an aligned table, or NDJSON with --json')
    .argument('<db>', 'the SQLite file a sqlite sink writes')
    .argument('<sql>', 'the query, e.g. "select name, price from ice_creams order by price desc limit 5"')
    .option('--json', 'print one JSON object per row instead of a table')
    .action(async (db: string, sql: string, opts: { json?: boolean }) => {
      const { runQuery } = await import('./views/query.js');
      setExit(await runQuery(db, sql, { json: opts.json }, process.stdout));
    });
  program
    .command('run')
    .description('run a pipeline file: source → stages → sinks, each its own process; reloads the file when it is saved (or on SIGHUP)')
    .argument('<pipeline>', 'the pipeline YAML file')
    .option('--metrics <host:port>', 'serve /metrics (Prometheus) and /status (JSON) on this address, e.g. 127.0.0.1:9464')
    .option('--status-interval <seconds>', 'seconds between status lines when stderr is not a terminal', '10')
    .action(async (file: string, opts: { metrics?: string; statusInterval: string }) => {
      const { runPipelineCommand } = await import('./supervisor/index.js');
      const seconds = Number(opts.statusInterval);
      if (!(seconds > 0)) throw new CqpError('USAGE', `--status-interval: expected a number of seconds, got ${opts.statusInterval}`);
      setExit(await runPipelineCommand(file, { ...(opts.metrics ? { metrics: opts.metrics } : {}), statusIntervalMs: seconds * 1000 }));
    });
  program
    .command('lint')
    .description('check a pipeline file without running it (exit 0, or 2 with FILE:LINE, the field and a suggestion)')
    .argument('<pipeline>', 'the pipeline YAML file')
    .action(async (file: string) => {
      const { lintCommand } = await import('./supervisor/index.js');
      setExit(await lintCommand(file));
    });
  return program;
}

let exitCode = 0;

/** Records the exit code a command returned (commands that fail by returning, not throwing). */
function setExit(code: number): void {
  exitCode = code;
}

function addLogCommands(program: Command): void {
  const log = program.command('log').description('inspect and repair a command log (cat, verify, stat, repair)');
  const run = async (sub: 'cat' | 'verify' | 'stat' | 'repair', file: string, opts: Record<string, unknown> = {}): Promise<void> => {
    const { runLogCommand } = await import('./log/tools.js');
    setExit(await runLogCommand(sub, file, opts));
  };
  log
    .command('cat')
    .description('print the events as NDJSON, byte for byte as appended (no JSON parse)')
    .argument('<file>', 'the log file')
    .option('--from <pos>', 'first record: a sequence number or an ISO-8601 append time')
    .option('--until <pos>', 'last record: a sequence number or an ISO-8601 append time')
    .option('--meta', 'wrap each event as {"seq","time","event"}')
    .action((file: string, opts: Record<string, unknown>) => run('cat', file, opts));
  log
    .command('verify')
    .description('check every record; exit 0 when all check out, 1 naming the first bad seq and byte offset')
    .argument('<file>', 'the log file')
    .action((file: string) => run('verify', file));
  log
    .command('stat')
    .description('print the record count, first/last seq and append time, size, and source positions')
    .argument('<file>', 'the log file')
    .action((file: string) => run('stat', file));
  log
    .command('repair')
    .description('cut the log at its first bad record (explicit: what follows it is dropped)')
    .argument('<file>', 'the log file')
    .action((file: string) => run('repair', file));
}

/** Entry point of every bin: parses argv, runs, and exits with 0, 1 or 2. */
export async function main(argv: string[]): Promise<void> {
  process.stdout.on('error', (error) => {
    if (isBrokenPipe(error)) process.exit(0);
  });
  const program = buildProgram();
  const override = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.commands.forEach(override);
  };
  override(program);
  let code: number;
  try {
    await program.parseAsync(argv, { from: 'user' });
    code = exitCode;
  } catch (error) {
    code = handleError(error);
  }
  // Writes to pipes and files are synchronous on Linux, so nothing written is cut off; exiting here
  // ends an stdin that was paused mid-stream (after SIGTERM) instead of waiting for its writer.
  process.exit(code);
}

function handleError(error: unknown): number {
  const code = (error as { code?: string }).code ?? '';
  if (code.startsWith('commander.')) {
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    return (error as { exitCode?: number }).exitCode === 0 ? 0 : 2;
  }
  if (isBrokenPipe(error)) return 0;
  if (error instanceof CqpError) {
    process.stderr.write(error.code === 'BAD_INPUT' ? `${error.message}\n` : `cqp: ${error.message}\n`);
    return exitCodeFor(error);
  }
  process.stderr.write(`cqp: ${messageOf(error)}\n`);
  if (process.env.CQP_DEBUG && error instanceof Error) process.stderr.write(`${error.stack ?? ''}\n`);
  return 1;
}
