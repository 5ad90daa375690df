import type { Command } from 'commander';
import type { ComponentDefinition, ComponentKind } from './core/component.js';
import { holdStopSignals } from './core/early-stop.js';
import { CqpError } from './core/errors.js';
import { addAuthoringCommands } from './authoring-cli.js';
import { cqpProgram, runMain, setExit } from './main.js';
import { addTapCommand } from './tap/cli.js';

/** Commands that need no component: the registry (and zod) is not loaded for them, so they start fast. */
const PLAIN_COMMANDS = new Set(['log', 'query', 'views', 'run', 'lint', 'replay', 'graph', 'schema', 'test', 'tap']);

/** Commands that stop by draining on SIGINT or SIGTERM: a signal before they are ready for it is held for them. */
const DRAINING_COMMANDS = new Set(['run']);

/** Builds the `cqp` command line for these arguments. */
export async function buildProgram(argv: string[]): Promise<Command> {
  if (DRAINING_COMMANDS.has(argv[0] ?? '')) holdStopSignals();
  const program = cqpProgram();
  if (!PLAIN_COMMANDS.has(argv[0] ?? '')) {
    const [{ addComponentCommands }, { componentFiles, loadComponents }] = await Promise.all([import('./component-cli.js'), import('./components.js')]);
    program.command('list').description('list every source, filter and sink').action(() => listCommand(loadComponents));
    await addComponentCommands(program, argv, componentFiles);
  }
  addLogCommands(program);
  program
    .command('query')
    .description('run SQL against a views database (read-only) and print an aligned table, or NDJSON with --json')
    .argument('<db>', 'the SQLite file a sqlite sink writes, or a postgres://… URL (the database a postgres sink writes)')
    .argument('<sql>', 'the query, e.g. "select name, price from ice_creams order by price desc limit 5"')
    .option('--json', 'print one JSON object per row instead of a table')
    .action(async (db: string, sql: string, opts: { json?: boolean }) => {
      if (/^postgres(ql)?:\/\//i.test(db)) {
        const { runPgQuery } = await import('./views/pg-query.js');
        setExit(await runPgQuery(db, sql, { json: opts.json }, process.stdout));
        return;
      }
      const { runQuery } = await import('./views/query.js');
      setExit(await runQuery(db, sql, { json: opts.json }, process.stdout));
    });
  program
    .command('views')
    .description('list the views of a SQLite views database: state (live, or building beside the live one), definition hash, position, tables')
    .argument('<db>', 'the SQLite file a sqlite sink writes')
    .option('--json', 'print one JSON object per view instead of a table')
    .action(async (db: string, opts: { json?: boolean }) => {
      if (/^postgres(ql)?:\/\//i.test(db)) throw new CqpError('USAGE', 'cqp views: lists the views of a SQLite database; for PostgreSQL, query cqp_views with cqp query');
      const { listViews } = await import('./views/query.js');
      setExit(await listViews(db, { json: opts.json }, process.stdout));
    });
  program
    .command('run')
    .description('run a pipeline file: source → stages → sinks, each its own process; reloads when the file, or a views file, schema or module it names, is saved (or on SIGHUP)')
    .argument('<pipeline>', 'the pipeline YAML file')
    .option('--metrics <host:port>', 'serve /metrics (Prometheus) and /status (JSON) on this address, e.g. 127.0.0.1:9464, or a bare port (9464: 127.0.0.1)')
    .option('--status-interval <seconds>', 'seconds between status lines when stderr is not a terminal (none when stdout is the same file as stderr)', '10')
    .option('--drain-timeout <seconds>', 'after SIGINT/SIGTERM, how long the drain may go without progress before what is left is killed (exit 1)', '30')
    .action(async (file: string, opts: { metrics?: string; statusInterval: string; drainTimeout: string }) => {
      const { runPipelineCommand } = await import('./supervisor/index.js');
      const seconds = Number(opts.statusInterval);
      if (!(seconds > 0)) throw new CqpError('USAGE', `--status-interval: expected a number of seconds, got ${opts.statusInterval}`);
      const drain = Number(opts.drainTimeout);
      if (!(drain > 0)) throw new CqpError('USAGE', `--drain-timeout: expected a number of seconds, got ${opts.drainTimeout}`);
      setExit(await runPipelineCommand(file, { ...(opts.metrics ? { metrics: opts.metrics } : {}), statusIntervalMs: seconds * 1000, drainTimeoutMs: drain * 1000 }));
    });
  program
    .command('replay')
    .description("re-process the command log through a pipeline's stages into its sinks; files are rebuilt aside and renamed over their targets at the end")
    .requiredOption('--log <log>', 'the command log to read, a file or nats://HOST:PORT/STREAM (in place of the pipeline\'s source)')
    .requiredOption('--pipeline <file>', 'the pipeline whose stages and sinks the events go through')
    .option('--from <pos>', 'first event: a sequence number or an ISO-8601 time (append time, or --time-field)')
    .option('--until <pos>', 'last event: a sequence number or an ISO-8601 time; the sinks end as they were at that point')
    .option('--time-field <path>', "apply ISO-8601 bounds to the time at this dot path in each event (e.g. header.createdTimestamp)")
    .option('--dry-run', 'print what would be read and what happens to each sink; touch nothing')
    .option('--with-external-sinks', 'also publish to sinks outside cqp (kinesis), which replay skips by default')
    .option('--status-interval <seconds>', 'seconds between progress lines when stderr is not a terminal', '10')
    .action(async (opts: { log: string; pipeline: string; from?: string; until?: string; timeField?: string; dryRun?: boolean; withExternalSinks?: boolean; statusInterval: string }) => {
      const { replayCommand } = await import('./supervisor/replay.js');
      const seconds = Number(opts.statusInterval);
      if (!(seconds > 0)) throw new CqpError('USAGE', `--status-interval: expected a number of seconds, got ${opts.statusInterval}`);
      setExit(await replayCommand({ ...opts, statusIntervalMs: seconds * 1000 }));
    });
  program
    .command('lint')
    .description('check a pipeline file and every file and expression it names, as cqp run would at start, without running it (exit 0, or 2 with FILE:LINE: field: message for each problem)')
    .argument('<pipeline>', 'the pipeline YAML file')
    .action(async (file: string) => {
      const { lintCommand } = await import('./supervisor/index.js');
      setExit(await lintCommand(file));
    });
  addAuthoringCommands(program, setExit);
  addTestCommand(program);
  addTapCommand(program, setExit);
  return program;
}

const TEST_HELP = `
A test file (NAME.test.yaml, beside the pipeline) names its pipeline and holds tests. Each test feeds
events into the pipeline's own components, on temporary files and databases: the pipeline's stores
are never written (a JetStream log is kept in a temporary file), and sinks that publish outside cqp
(kinesis, PostgreSQL views) are not run, what reaches them is kept.

  pipeline: ice-creams.yaml              # relative to the test file
  tests:
    - name: a sale is counted
      inputs:
        - insert_at: enrich              # a stage (its input), or source (the first stage's input)
          events:                        # or file: fixtures/in.ndjson (relative to the test file)
            - { header: { eventName: [sale.ice_cream], rel: { id: ic-1 } }, payload: { qty: 2 } }
      outputs:
        - extract_from: enrich           # a stage (what it writes) or a sink (what reaches it)
          count: 1                       # optional
          conditions:                    # each holds for every event extracted
            - json_contains: { payload: { qty: 2 } }
            - expr: "e.header.eventId.startsWith('events/')"    # json_equals: {...} compares whole events
      no_outputs_from: [validate]        # stages or sinks nothing may come out of
      views:                             # queries on a SQLite views sink after the events
        - { sink: views, query: "SELECT id, sold FROM ice_creams", rows: [{ id: ic-1, sold: 2 }] }

Prints a line per test (passed or FAILED, with its time), under each failure where it is in the test
file, what failed and a diff of expected (-) and actual (+), and last "N passed, M failed".
Exit 0 when every test passes, 1 when one fails, 2 when a file does not parse or validate (FILE:LINE).`;

function addTestCommand(program: Command): void {
  program
    .command('test')
    .description('run pipeline tests (NAME.test.yaml): events into any stage, checks on what comes out of stages, sinks and views')
    .argument('[files...]', 'test files, or folders to search for *.test.yaml (default: the current folder, without node_modules)')
    .option('--timeout <seconds>', 'a test still running after this long fails, and its components are stopped', '60')
    .addHelpText('after', TEST_HELP)
    .action(async (files: string[], opts: { timeout: string }) => {
      const { testCommand } = await import('./testing/command.js');
      const seconds = Number(opts.timeout);
      if (!(seconds > 0)) throw new CqpError('USAGE', `--timeout: expected a number of seconds, got ${opts.timeout}`);
      setExit(await testCommand(files, seconds * 1000, { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) }));
    });
}

async function listCommand(loadComponents: (kind: ComponentKind) => Promise<ComponentDefinition[]>): Promise<void> {
  const kinds = ['source', 'filter', 'sink'] as const;
  const loaded = await Promise.all(kinds.map((kind) => loadComponents(kind)));
  const width = Math.max(...loaded.flat().map((c) => c.name.length));
  kinds.forEach((kind, i) => {
    process.stdout.write(`${kind}s:\n`);
    for (const c of loaded[i] ?? []) process.stdout.write(`  ${c.name.padEnd(width)}  ${c.summary}\n`);
  });
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
    .argument('<log>', 'the log: a file, or a JetStream stream nats://HOST:PORT/STREAM')
    .option('--from <pos>', 'first record: a sequence number or an ISO-8601 append time')
    .option('--until <pos>', 'last record: a sequence number or an ISO-8601 append time')
    .option('--meta', 'wrap each event as {"seq","time","event"}')
    .action((file: string, opts: Record<string, unknown>) => run('cat', file, opts));
  log
    .command('verify')
    .description('check every record; exit 0 when all check out, 1 naming the first bad seq and byte offset')
    .argument('<log>', 'the log: a file, or a JetStream stream nats://HOST:PORT/STREAM')
    .action((file: string) => run('verify', file));
  log
    .command('stat')
    .description('print the record count, first/last seq and append time, size, and source positions')
    .argument('<log>', 'the log: a file, or a JetStream stream nats://HOST:PORT/STREAM')
    .action((file: string) => run('stat', file));
  log
    .command('repair')
    .description('cut the log at its first bad record; what is cut is kept in FILE.cut-<time> beside it')
    .argument('<file>', 'the log file')
    .option('--dry-run', 'say what would be cut (records, bytes) and change nothing')
    .action((file: string, opts: Record<string, unknown>) => run('repair', file, opts));
}

/** Entry point of `cqp`: every command (a component's process runs its kind's main.ts, e.g. filters/main.ts). */
export function main(argv: string[]): Promise<void> {
  return runMain(argv, buildProgram);
}
