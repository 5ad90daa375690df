/**
 * A replay without stages whose one sink reads the log itself needs no supervisor: when the sink's
 * definition says it may run inside another process (`inProcess`), `cqp replay` runs it in its own
 * process instead of starting one for it. A process start is most of what a short replay takes. The
 * sink is given the command line its own process would be given, read by the same code, so it runs
 * alike: the same options, the same log bounds, the same building mode, the same errors.
 */
import { CqpError, exitCodeFor, messageOf, reportError } from '../core/errors.js';
import { findComponent } from '../core/registry.js';
import type { SinkProgress, StageIo } from '../core/runtime.js';
import { cliPath, type PipelinePlan, type SinkPlan } from './plan.js';
import type { ComponentStats } from './context.js';

/** The sink a replay may run itself: the only one, reading a bounded stretch of the log, with nothing in front. */
export function sinkToRunHere(run: PipelinePlan): SinkPlan | undefined {
  const [sink, ...others] = run.sinks;
  if (!sink || others.length > 0 || run.stages.length > 0) return undefined;
  if (!sink.logInput || sink.logInput.follow || sink.whereCommand !== undefined) return undefined;
  // Its command is the cqp CLI's (`cqp sink TYPE …`), read here as that process would read it.
  if (sink.command.args[0] !== cliPath() || sink.command.args[1] !== 'sink') return undefined;
  return findComponent('sink', sink.type)?.inProcess === true ? sink : undefined;
}

/** What the replay sees of a sink it runs itself. */
export interface SinkHere {
  /** Its counts, as the supervisor keeps them for a sink process. */
  stats: ComponentStats;
  /** Resolves with the exit code its process would have had: 0, 1, or 2 for a configuration it refused at start. */
  result: Promise<number>;
  /** Stops it after the batch in hand (SIGINT, SIGTERM). */
  stop(): void;
}

/**
 * Runs `sink` in this process, in `dir` (the pipeline's folder, where its process would run). What it
 * would write to stderr goes to `log`, under its name, as the supervisor passes on a sink's stderr.
 */
function runSinkHere(sink: SinkPlan, dir: string, log: (line: string) => void): SinkHere {
  const stats: ComponentStats = { name: sink.name, kind: 'sink', pid: process.pid, generation: 1, in: 0, out: 0, errors: 0, mirrored: 0, restarts: 0, heardAt: Date.now() };
  const controller = new AbortController();
  const say = (line: string): void => log(`[${sink.name}] ${line}`);
  let ready = false;
  const run = async (): Promise<number> => {
    const [{ readComponentCommand }, { runSink }, { componentFiles }] = await Promise.all([import('../component-cli.js'), import('../core/runtime.js'), import('../components.js')]);
    try {
      const { def, options, runtime } = await readComponentCommand([...sink.command.args.slice(1), ...(sink.logInput?.args ?? [])], componentFiles);
      if (def.kind !== 'sink') throw new CqpError('CONFIG', `${sink.name}: ${def.name} is not a sink`);
      const io: StageIo = {
        // A sink reading the log never reads its input stream; process.stdin is never touched.
        get input(): never {
          throw new Error(`${sink.name} reads the log, not stdin`);
        },
        get output(): never {
          throw new Error(`${sink.name} writes no output`);
        },
        warn: say,
        signal: controller.signal,
        cwd: dir,
        ready: () => (ready = true),
        progress: (p: SinkProgress) => {
          stats.in = p.in;
          stats.errors = p.errors;
          stats.heardAt = Date.now();
        },
      };
      await runSink(def, options, runtime, io);
      return 0;
    } catch (error) {
      // Said as its process would have said it (see main in cli.ts), then what the supervisor would add.
      say(error instanceof CqpError && error.code === 'BAD_INPUT' ? messageOf(error) : `cqp: ${messageOf(error)}`);
      if (!ready && exitCodeFor(error) === 2) {
        log(`cqp: ${sink.name}: configuration error at start (its message is above)`);
        return 2;
      }
      log(`cqp: ${sink.name} failed`);
      return 1;
    } finally {
      stats.heardAt = undefined;
    }
  };
  return { stats, result: run(), stop: () => controller.abort() };
}

/** The sinks (and stages) of a replay at work: the supervisor's processes, or its one sink run here. */
export interface Running {
  components(): ComponentStats[];
  /** The signal that stopped the replay, if one did. */
  interrupted(): NodeJS.Signals | undefined;
  /** Waits for the end, then `finish` with the exit code (0: every sink got to the end), under the signal handlers. */
  run(finish: (result: number) => Promise<number>): Promise<number>;
}

function stopLine(signal: NodeJS.Signals): string {
  return `cqp: ${signal}: stopping the replay; the sinks' targets stay as they were`;
}

/** The replay's stages and sinks run by a supervisor, each its own process. */
export async function supervised(run: PipelinePlan, log: (line: string) => void): Promise<Running> {
  // Loaded only here: a replay that runs its sink itself starts no process and needs none of it.
  const [{ Supervisor }, { supervise }] = await Promise.all([import('./supervisor.js'), import('./supervise.js')]);
  const supervisor = new Supervisor(run, { log, maxCrashes: 0 });
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = signal;
    log(stopLine(signal));
    supervisor.killAll(1);
  };
  return {
    components: () => supervisor.components(),
    interrupted: () => interrupted,
    run: (finish) =>
      supervise(supervisor, { SIGINT: onSignal, SIGTERM: onSignal }, async () => {
        await supervisor.start();
        return finish(await supervisor.result);
      }),
  };
}

/** The replay's one sink, run in this process. */
export function runHere(sink: SinkPlan, dir: string, log: (line: string) => void): Running {
  const here = runSinkHere(sink, dir, log);
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = signal;
    log(stopLine(signal));
    here.stop();
  };
  return {
    components: () => [here.stats],
    interrupted: () => interrupted,
    async run(finish) {
      process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
      try {
        return await finish(await here.result);
      } catch (error) {
        return reportError(error);
      } finally {
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      }
    },
  };
}
