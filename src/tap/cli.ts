import { type Command } from 'commander';
import { CqpError } from '../core/errors.js';

const TAP_HELP = `
The pipeline must run with --metrics: its address is all a tap needs. Names are those of the
pipeline file (the source is "source"), globs allowed (* and ?). A sink's inputs are what passes its
where:. Each line is the event itself ({"reason","event"} for a rejected one), or with --meta
{"component","at","event"} (and "reason").

Nothing is copied while nobody taps, and a tap never slows the pipeline: when it reads too slowly,
events are dropped for it. How many is said on stderr at the end, and with --meta also as lines
{"dropped":N,"at":TIME} (the total so far) among the events. | head -1 is a normal end. Not
tappable: a sink that follows the log (tap the log sink's inputs), and the lines a run: program
writes that are not JSON objects.

Examples:
  cqp run pipelines/example.yaml --metrics 127.0.0.1:9464 &
  cqp tap --url http://127.0.0.1:9464 --outputs-of enrich --count 5
  cqp tap --url http://127.0.0.1:9464 --errors-of '*' --meta
  cqp tap --url http://127.0.0.1:9464 --inputs-of audit --where "e.payload.productId === '42'"
  cqp tap --url http://127.0.0.1:9464 --outputs-of source | head -1
`;

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function positive(option: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new CqpError('USAGE', `${option}: expected a whole number, 1 or more, got "${text}"`);
  return n;
}

/** `cqp tap`. `setExit` records the exit code. */
export function addTapCommand(program: Command, setExit: (code: number) => void): void {
  program
    .command('tap')
    .description('print the live events of a running pipeline (cqp run --metrics) as NDJSON: outputs, inputs and rejected events of its components')
    .requiredOption('--url <url>', 'the address cqp run --metrics serves, e.g. http://127.0.0.1:9464')
    .option('--outputs-of <glob>', 'what these components write (repeatable)', collect)
    .option('--inputs-of <glob>', 'what goes into these components (repeatable)', collect)
    .option('--errors-of <glob>', 'the events these components rejected, with the reason (repeatable)', collect)
    .option('--where <expr>', 'only the events for which this JavaScript expression over `e` is truthy, e.g. "e.payload.qty > 1"')
    .option('--limit <n>', 'events per second at most; more are left out', '100')
    .option('--count <n>', 'stop after this many events')
    .option('--meta', 'print each event as {"component","at","event"}, and the dropped counts as {"dropped","at"}')
    .addHelpText('after', TAP_HELP)
    .action(async (opts: { url: string; outputsOf?: string[]; inputsOf?: string[]; errorsOf?: string[]; where?: string; limit: string; count?: string; meta?: boolean }) => {
      const { tapCommand } = await import('./command.js');
      const options = {
        url: opts.url,
        outputsOf: opts.outputsOf ?? [],
        inputsOf: opts.inputsOf ?? [],
        errorsOf: opts.errorsOf ?? [],
        where: opts.where,
        limit: positive('--limit', opts.limit),
        count: opts.count === undefined ? undefined : positive('--count', opts.count),
        meta: opts.meta === true,
      };
      setExit(await tapCommand(options, process.stdout, (line) => process.stderr.write(`${line}\n`)));
    });
}
