import { Command } from 'commander';
import { CqpError, exitCodeFor, messageOf } from './core/errors.js';
import { isBrokenPipe } from './core/runtime.js';
import { packageVersion } from './core/version.js';
import { outputClosed } from './stage-control.js';

/**
 * What every process of cqp shares, whichever commands it knows: `cqp` has every command (cli.ts), a
 * component's process its kind's alone (filters/main.ts and the like), so that it loads no other code.
 */

/** The `cqp` command, with no subcommand yet. */
export function cqpProgram(): Command {
  return new Command('cqp')
    .description('stream processor for NDJSON events: filters, a command log, SQLite views, replay, hot reload')
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
}

let exitCode = 0;

/** Records the exit code a command returned (commands that fail by returning, not throwing). */
export function setExit(code: number): void {
  exitCode = code;
}

/** Parses argv with the program `build` makes for it, runs it, and exits with 0, 1 or 2. */
export async function runMain(argv: string[], build: (argv: string[]) => Promise<Command>): Promise<void> {
  // Node makes a stdout pipe non-blocking once it is touched. A sink other than `stdout` writes nothing
  // there, so it leaves stdout alone: programs sharing that pipe (`tee >(cqp-sink …) | …`) keep theirs.
  const printsOnly = ['--help', '-h', '--version', '-V'].some((flag) => argv.includes(flag));
  const usesStdout = !(argv[0] === 'sink' && argv[1] !== undefined && argv[1] !== 'stdout' && !printsOnly);
  if (usesStdout) {
    process.stdout.on('error', (error) => {
      // Under `cqp run` it says so first: the supervisor must not take the exit for a crash.
      if (isBrokenPipe(error)) void outputClosed().then(() => process.exit(0));
    });
  }
  const program = await build(argv);
  const version = packageVersion();
  // Every command answers --version (`cqp-filter --version`, `cqp run --version`), not only `cqp`.
  const override = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.version(version, '-V, --version', 'print the cqp version');
    cmd.commands.forEach(override);
  };
  override(program);
  let code: number;
  try {
    await program.parseAsync(argv, { from: 'user' });
    code = exitCode;
  } catch (error) {
    code = await handleError(error);
  }
  // A write to a full pipe is queued, not lost, but process.exit would drop it: wait for stdout to
  // drain first. Exiting (rather than returning) ends an stdin paused mid-stream after SIGTERM.
  if (usesStdout) await flushed(process.stdout);
  process.exit(code);
}

function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.writableLength === 0 || stream.destroyed) resolve();
    else stream.write('', () => resolve());
  });
}

async function handleError(error: unknown): Promise<number> {
  const code = (error as { code?: string }).code ?? '';
  if (code.startsWith('commander.')) {
    // `--help` and `--version` exit 0; usage printed because no command was given (bare `cqp`) is a usage error.
    return (error as { exitCode?: number }).exitCode === 0 ? 0 : 2;
  }
  if (isBrokenPipe(error)) return 0;
  // chalk is loaded here, not at start-up: it imports node:process, whose loading touches
  // process.stdout (see runMain).
  const { stderrColor } = await import('./core/color.js');
  const prefix = stderrColor.red('cqp:');
  if (error instanceof CqpError) {
    process.stderr.write(error.code === 'BAD_INPUT' ? `${error.message}\n` : `${prefix} ${error.message}\n`);
    return exitCodeFor(error);
  }
  process.stderr.write(`${prefix} ${messageOf(error)}\n`);
  if (process.env.CQP_DEBUG && error instanceof Error) process.stderr.write(`${error.stack ?? ''}\n`);
  return 1;
}
