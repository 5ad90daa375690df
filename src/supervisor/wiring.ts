/**
 * Starting processes and connecting them: every source, stage and sink is its own process, started as
 * the command a user could type, and the supervisor owns every connection between them (a `Link` per
 * stdout: cqp stages write straight into the next one's pipe, steered over a control channel, and the
 * supervisor pumps the rest).
 */
import { CqpError, messageOf } from '../core/errors.js';
import { resumePositions } from './positions.js';
import type { PositionMap } from '../core/position.js';
import type { Progress } from '../protocol.js';
import type { Command, SinkPlan, SourcePlan, StagePlan } from './plan.js';
import { readsLog, type ComponentStats, type Context, type Node, type SinkUnit } from './context.js';
import { stopFor, watch } from './exits.js';
import { DirectLink, directTarget, type Link } from './link.js';
import { StageProcess } from './process.js';
import { Pump, type PumpOptions, type PumpTarget } from './pump.js';
import { runOutputChecks } from './run-output.js';

/**
 * Spawns one process. `downstream`: where its output goes; a cqp process writes straight into the
 * next one's stdin when that is a single cqp process. `control`: false for a sink reading the log.
 */
function spawn(
  ctx: Context,
  command: Command,
  name: string,
  stats: ComponentStats,
  { extraArgs = [], inherit, downstream = [], control = true }: { extraArgs?: string[]; inherit?: 'stdin' | 'stdout'; downstream?: readonly PumpTarget[]; control?: boolean } = {},
): StageProcess {
  const direct = command.signalsReady && control ? directTarget(downstream) : undefined;
  // A reload racing a crash: the process to write into has died (its recovery is queued behind the reload).
  if (direct && (direct.proc?.running === false || direct.stream.destroyed)) {
    throw new CqpError('STAGE', `${name}: ${direct.proc?.name ?? 'the process it writes into'} has exited; it is restarted first`);
  }
  const proc = new StageProcess(
    { ...command, args: [...command.args, ...extraArgs] },
    {
      name,
      cwd: ctx.plan.dir,
      inheritStdin: inherit === 'stdin',
      inheritStdout: inherit === 'stdout',
      control,
      ...(direct ? { stdout: direct.stream } : {}),
      stderrLine: (line) => ctx.log(`[${name}] ${line}`),
    },
  );
  if (proc.controlled) {
    // Told what to mirror once it listens (a process started while someone taps its component).
    proc.onTapped = (message) => ctx.taps.publish(name, message);
    void proc.ready?.then((ok) => ok && ctx.taps.refresh());
  }
  return proc;
}

/** A process's stdin as a link's target; a process with a control channel counts its own input. */
export function target(proc: StageProcess, stats: ComponentStats | undefined): PumpTarget {
  return {
    stream: proc.stdin,
    proc,
    ...(stats && !proc.controlled ? { count: (n: number) => (stats.in += n) } : {}),
    ending: () => (proc.expected ??= 'end'),
  };
}

/**
 * Counts from a process's own reports (the supervisor does not see what passes a direct link), the
 * events its error policy handled among them; `then`: what else to do with each report.
 */
function countReports(proc: StageProcess, stats: ComponentStats, then?: (report: Progress) => void): void {
  let last = { in: 0, out: 0, errors: 0, mirrored: 0 };
  proc.onReport = (report) => {
    if (stats.pid === proc.pid) stats.heardAt = Date.now();
    stats.in += report.in - last.in;
    stats.out += report.out - last.out;
    stats.errors += report.errors - last.errors;
    stats.mirrored += (report.mirrored ?? 0) - last.mirrored;
    stats.activity = report.activity;
    last = { ...report, mirrored: report.mirrored ?? 0 };
    then?.(report);
  };
}

/**
 * The link from a process's output to `targets`: direct when it was spawned writing into them. A `run:`
 * stage's output is checked and given positions on the way (`stage`: its plan).
 */
export function linkFrom(ctx: Context, proc: StageProcess, stats: ComponentStats | undefined, targets: PumpTarget[], trackPositions = false, stage?: StagePlan): Link {
  const options = {
    trackPositions,
    ...(stats && !proc.controlled ? { count: (n: number) => (stats.out += n) } : {}),
    cleanEnd: () => proc.clean(),
    warn: (message: string) => ctx.log(`cqp: ${proc.name}: ${message}`),
    ...(stage && stats && stage.filter === undefined ? { ...runOutput(ctx, stage, proc, stats), mirror: ctx.taps.pumpMirror(stage.name, stats) } : {}),
  };
  const stdout = proc.stdout;
  return stdout ? new Pump(stdout, targets, { ...options, endTargets: true }) : new DirectLink(proc, targets, options);
}

/** Checks and restamps what a `run:` program writes (run-output.ts); a line that cannot go on stops the pipeline. */
function runOutput(ctx: Context, stage: StagePlan, proc: StageProcess, stats: ComponentStats): Pick<PumpOptions, 'rewrite' | 'failed'> {
  return runOutputChecks(stage, {
    // Stamps matter only to exactly-once sinks after a restart: without restarts (a replay) nothing is
    // fed twice, and at-least-once sinks may see events again anyway.
    positioned: ctx.plan.source.resumable && ctx.maxCrashes > 0 && ctx.plan.sinks.some((s) => s.exactlyOnce),
    warn: (line) => ctx.log(`[${stage.name}] ${line}`),
    badLine: () => stats.errors++,
    failed: (error) => stopFor(ctx, proc, error),
  });
}

/**
 * Answers a source reading its share of a group's input: where the exactly-once sinks stand (read from
 * their stores), and notes the partitions it holds.
 */
function answerWorker(ctx: Context, proc: StageProcess, stats: ComponentStats): void {
  // A new process holds nothing until it says so.
  stats.holding = undefined;
  proc.onAsk = (id) => {
    void resumePositions(ctx.plan.sinks).then(
      (at) => proc.request({ cqp: 'sinks-at', id, at: at ?? null }),
      (error: unknown) => ctx.log(`cqp: cannot read where the sinks stand (${messageOf(error)})`),
    );
  };
  proc.onHolding = (group, partitions) => {
    stats.holding = { group, partitions };
  };
}

/** Spawns a source or stage process, writing into `downstream` if it can (the link is made by linkFrom). */
export function spawnProc(ctx: Context, plan: SourcePlan | StagePlan, kind: 'source' | 'stage', downstream: readonly PumpTarget[], resume?: PositionMap, watched = true): { proc: StageProcess; stats: ComponentStats } {
  const stats = ctx.statsFor(plan.name, kind);
  const isSource = kind === 'source';
  const extraArgs = isSource && (plan as SourcePlan).resumable && resume ? ['--resume', JSON.stringify(resume)] : [];
  const inherit = isSource && (plan as SourcePlan).readsStdin ? 'stdin' : undefined;
  const proc = spawn(ctx, plan.command, plan.name, stats, { extraArgs, downstream, ...(inherit ? { inherit } : {}) });
  if (proc.controlled) countReports(proc, stats);
  if (isSource && proc.controlled) answerWorker(ctx, proc, stats);
  stats.generation++;
  stats.pid = proc.pid;
  stats.heardAt = proc.controlled ? Date.now() : undefined;
  if (watched) watch(ctx, proc);
  return { proc, stats };
}

/**
 * Spawns a sink with its where-filter; only its feed from the stages is left to connect. A sink that
 * reads the log itself needs no feed: it resumes after what it holds and reports how far it has read.
 */
export async function spawnUnit(ctx: Context, plan: SinkPlan, watched = true): Promise<SinkUnit> {
  const stats = ctx.statsFor(plan.name, 'sink');
  const sink = spawn(ctx, plan.command, plan.name, stats, { extraArgs: plan.logInput?.args ?? [], inherit: 'stdout', control: !plan.logInput });
  stats.generation++;
  stats.pid = sink.pid;
  stats.heardAt = sink.controlled || plan.logInput ? Date.now() : undefined;
  if (sink.controlled) countReports(sink, stats);
  const unit: SinkUnit = { plan, sink, where: undefined, whereLink: undefined, progress: {}, ended: false, stats };
  if (plan.whereCommand) {
    const feed = [target(sink, stats)];
    unit.where = spawn(ctx, plan.whereCommand, `${plan.name}:where`, stats, { downstream: feed });
    unit.whereLink = linkFrom(ctx, unit.where, undefined, feed);
    // Its counts are the sink's own; only what it mirrored for a tap of the sink's inputs adds up.
    let mirrored = 0;
    unit.where.onReport = (report) => {
      stats.mirrored += (report.mirrored ?? 0) - mirrored;
      mirrored = report.mirrored ?? 0;
    };
  }
  if (plan.logInput) countReports(sink, stats, (report) => (unit.progress = report.at));
  if (watched) for (const proc of ctx.unitProcs(unit)) watch(ctx, proc, unit);
  return unit;
}

/** Where the stages' output goes in: the where-filter or the sink itself, for each sink fed by the stages. */
export function fanoutTargets(ctx: Context): PumpTarget[] {
  const targets: PumpTarget[] = [];
  for (const unit of ctx.units.values()) {
    if (readsLog(unit)) continue;
    targets.push(unit.where ? target(unit.where, undefined) : target(unit.sink, unit.stats));
  }
  return targets;
}

/** Starts the sinks fed by the stages, then the stages from the last to the source, each writing into the next. */
export async function startMain(ctx: Context, resume: PositionMap | undefined): Promise<void> {
  for (const sink of ctx.plan.sinks) if (!sink.logInput) ctx.units.set(sink.name, await spawnUnit(ctx, sink));
  const plans = [ctx.plan.source as SourcePlan | StagePlan, ...ctx.plan.stages];
  let downstream = fanoutTargets(ctx);
  const nodes: Node[] = [];
  for (let i = plans.length - 1; i >= 0; i--) {
    const plan = plans[i] as SourcePlan | StagePlan;
    const { proc, stats } = i === 0 ? spawnProc(ctx, plan, 'source', downstream, resume) : spawnProc(ctx, plan, 'stage', downstream);
    nodes.unshift({ plan, proc, link: linkFrom(ctx, proc, stats, downstream, i === 0, i === 0 ? undefined : (plan as StagePlan)), stats });
    downstream = [target(proc, stats)];
  }
  [ctx.source] = nodes as [Node];
  ctx.stages = nodes.slice(1);
}
