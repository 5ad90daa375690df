/**
 * The supervisor behind `cqp run`. Every source, stage and sink is its own process, started
 * as the command a user could type; the supervisor owns every connection between them (a `Link` per
 * stdout: cqp stages write straight into the next one's pipe, steered over a control channel, and the
 * supervisor pumps the rest), so it can stop the flow between two lines, swap a stage and go on. Reloads, crash recovery
 * and shutdown run one at a time (`serial`), so each sees a pipeline at rest between two of them.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CqpError, messageOf } from '../core/errors.js';
import { compareN, type PositionMap } from '../core/position.js';
import { parsePipeline, type Command, type PipelinePlan, type SinkPlan, type SourcePlan, type StagePlan } from './config.js';
import { describeDiff, reloadDiff, type ReloadDiff } from './diff.js';
import { laterPositions, resumePositions } from './positions.js';
import { Failures, isConfigurationExit } from './failures.js';
import { lockedOut, refusalOf } from './refusals.js';
import { readLogEnd, sinkEnds, type LogEnd, type SinkEnd } from './sink-ends.js';
import { DirectLink, directTarget, type Link } from './link.js';
import { StageProcess, type ExitStatus } from './process.js';
import type { Progress } from '../protocol.js';
import { Pump, type PumpOptions, type PumpTarget } from './pump.js';
import { runOutputChecks } from './run-output.js';
import { stalledFor } from './status.js';

/** Live counters of one component, kept across its generations. */
export interface ComponentStats {
  name: string;
  kind: 'source' | 'stage' | 'sink';
  pid: number | undefined;
  /** 1 for the first process; +1 each time a reload or a crash replaces it. */
  generation: number;
  in: number;
  out: number;
  errors: number;
  restarts: number;
  /**
   * When its running process last reported (ms since the epoch): cqp components report at least once a
   * second, so a long silence means it is stopped or hung (see `stalledFor`). Undefined for a `run:`
   * program (it does not report) and while no process of it runs.
   */
  heardAt: number | undefined;
}

/** The `/status` document; `stalled`: seconds since a silent stage's last report, or null. */
export interface PipelineStatus {
  stages: Array<{ name: string; pid: number | null; generation: number; in: number; out: number; errors: number; stalled: number | null }>;
  reloads: { ok: number; failed: number };
}

export interface SupervisorOptions {
  /** Diagnostics (stage stderr, reloads, crashes): one line each. */
  log: (line: string) => void;
  /** How long a `run:` program must stay up before a reload counts on it (ms); cqp components say when they are ready. */
  graceMs?: number;
  /** More crashes than this within `crashWindowMs` stop the pipeline. */
  maxCrashes?: number;
  crashWindowMs?: number;
  /** How long the drain after a stop may take before what is left is killed (ms); no limit when unset. */
  drainTimeoutMs?: number | undefined;
}

interface Node {
  plan: SourcePlan | StagePlan;
  proc: StageProcess;
  link: Link;
  stats: ComponentStats;
}

interface SinkUnit {
  plan: SinkPlan;
  sink: StageProcess;
  /** The hidden `cqp filter where` in front of the sink. */
  where: StageProcess | undefined;
  whereLink: Link | undefined;
  /** A sink that reads the log itself (`plan.logInput`): how far it has read, from its reports. */
  progress: PositionMap;
  /** A bounded log read (`cqp replay`) that has ended: the sink exited 0 on its own. */
  ended: boolean;
  stats: ComponentStats;
}

/** True for a sink that reads the log itself rather than the stages' output. */
function readsLog(unit: SinkUnit): boolean {
  return unit.plan.logInput !== undefined;
}

const BACKOFF_START_MS = 100;
const BACKOFF_MAX_MS = 5000;
/** How long a pipeline file that does not parse must stay unchanged before a reload is refused (ms). */
const SETTLE_MS = 150;
/** How long a view may read nothing new, short of the log's end, before shutdown stops it anyway (ms). */
const FOLLOWER_STALL_MS = 30_000;

export class Supervisor {
  plan: PipelinePlan;
  readonly reloads = { ok: 0, failed: 0 };
  readonly startedAt = Date.now();
  /** Where the source started: after the positions its exactly-once sinks held (undefined: from its beginning). */
  resumedFrom: PositionMap | undefined;
  /** Resolves with the exit code once the pipeline has stopped. */
  readonly result: Promise<number>;

  private source: Node | undefined;
  private stages: Node[] = [];
  private readonly units = new Map<string, SinkUnit>();
  private readonly stats = new Map<string, ComponentStats>();
  private busy: Promise<unknown> = Promise.resolve();
  private state: 'starting' | 'running' | 'recovering' | 'stopping' | 'done' = 'starting';
  private reloadNo = 0;
  private reloadQueued = false;
  private refusedText: string | undefined;
  private crashes: number[] = [];
  private failed = false;
  /** Components that failed for good: the run then ends with exit 1 and says why. */
  private readonly failures = new Failures();
  private resolveResult: (code: number) => void = () => {};
  private readonly graceMs: number;
  private readonly maxCrashes: number;
  private readonly crashWindowMs: number;
  private drainLimit: NodeJS.Timeout | undefined;

  constructor(
    plan: PipelinePlan,
    private readonly options: SupervisorOptions,
  ) {
    this.plan = plan;
    this.graceMs = options.graceMs ?? 300;
    this.maxCrashes = options.maxCrashes ?? 5;
    this.crashWindowMs = options.crashWindowMs ?? 60_000;
    this.result = new Promise((resolve) => (this.resolveResult = resolve));
  }

  private log(line: string): void {
    this.options.log(line);
  }

  /** Runs `task` after every reload, recovery or shutdown step queued before it. */
  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.busy.then(task, task);
    this.busy = run.catch(() => {});
    return run;
  }

  /** Starts every process of the pipeline. */
  async start(): Promise<void> {
    await this.serial(async () => {
      // A source nothing reads is not started: in a replay without stages, every sink reads the log itself.
      if (this.fedByStages()) await this.startMain((this.resumedFrom = await this.resumeFor(undefined)));
      for (const sink of this.plan.sinks) if (sink.logInput) this.units.set(sink.name, await this.spawnUnit(sink));
      this.state = 'running';
      this.endIfReadersDone();
    });
  }

  private fedByStages(): boolean {
    return this.plan.stages.length > 0 || this.plan.sinks.some((s) => !s.logInput);
  }


  private statsFor(name: string, kind: ComponentStats['kind']): ComponentStats {
    let s = this.stats.get(name);
    if (!s) {
      s = { name, kind, pid: undefined, generation: 0, in: 0, out: 0, errors: 0, restarts: 0, heardAt: undefined };
      this.stats.set(name, s);
    }
    return s;
  }

  /**
   * Spawns one process. `downstream`: where its output goes; a cqp process writes straight into the
   * next one's stdin when that is a single cqp process. `control`: false for a sink reading the log.
   */
  private spawn(
    command: Command,
    name: string,
    stats: ComponentStats,
    { extraArgs = [], inherit, downstream = [], control = true }: { extraArgs?: string[]; inherit?: 'stdin' | 'stdout'; downstream?: readonly PumpTarget[]; control?: boolean } = {},
  ): StageProcess {
    const direct = command.signalsReady && control ? directTarget(downstream) : undefined;
    return new StageProcess(
      { ...command, args: [...command.args, ...extraArgs] },
      {
        name,
        cwd: this.plan.dir,
        inheritStdin: inherit === 'stdin',
        inheritStdout: inherit === 'stdout',
        control,
        ...(direct ? { stdout: direct.stream } : {}),
        stderrLine: (line) => this.log(`[${name}] ${line}`),
      },
    );
  }

  /** A process's stdin as a link's target; a process with a control channel counts its own input. */
  private target(proc: StageProcess, stats: ComponentStats | undefined): PumpTarget {
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
  private countReports(proc: StageProcess, stats: ComponentStats, then?: (report: Progress) => void): void {
    let last = { in: 0, out: 0, errors: 0 };
    proc.onReport = (report) => {
      if (stats.pid === proc.pid) stats.heardAt = Date.now();
      stats.in += report.in - last.in;
      stats.out += report.out - last.out;
      stats.errors += report.errors - last.errors;
      last = report;
      then?.(report);
    };
  }

  /**
   * The link from a process's output to `targets`: direct when it was spawned writing into them. A `run:`
   * stage's output is checked and given positions on the way (`stage`: its plan).
   */
  private linkFrom(proc: StageProcess, stats: ComponentStats | undefined, targets: PumpTarget[], trackPositions = false, stage?: StagePlan): Link {
    const options = {
      trackPositions,
      ...(stats && !proc.controlled ? { count: (n: number) => (stats.out += n) } : {}),
      cleanEnd: () => proc.clean(),
      warn: (message: string) => this.log(`cqp: ${proc.name}: ${message}`),
      ...(stage && stats && stage.filter === undefined ? this.runOutput(stage, proc, stats) : {}),
    };
    const stdout = proc.stdout;
    return stdout ? new Pump(stdout, targets, { ...options, endTargets: true }) : new DirectLink(proc, targets, options);
  }

  /** Checks and restamps what a `run:` program writes (run-output.ts); a line that cannot go on stops the pipeline. */
  private runOutput(stage: StagePlan, proc: StageProcess, stats: ComponentStats): Pick<PumpOptions, 'rewrite' | 'failed'> {
    return runOutputChecks(stage, {
      // Stamps matter only to exactly-once sinks after a restart: without restarts (a replay) nothing is
      // fed twice, and at-least-once sinks may see events again anyway.
      positioned: this.plan.source.resumable && this.maxCrashes > 0 && this.plan.sinks.some((s) => s.exactlyOnce),
      warn: (line) => this.log(`[${stage.name}] ${line}`),
      badLine: () => stats.errors++,
      failed: (error) => this.stopFor(proc, error),
    });
  }

  /** A stage whose output cannot go on: it is killed, what it wrote before drains, and the run ends with exit 1. */
  private stopFor(proc: StageProcess, error: CqpError): void {
    this.failures.stopped(proc.name, messageOf(error));
    this.log(`cqp: ${messageOf(error)}`);
    proc.stop('SIGKILL');
    void this.stop();
  }

  /** Spawns a source or stage process, writing into `downstream` if it can (the link is made by linkFrom). */
  private spawnProc(plan: SourcePlan | StagePlan, kind: 'source' | 'stage', downstream: readonly PumpTarget[], resume?: PositionMap, watched = true): { proc: StageProcess; stats: ComponentStats } {
    const stats = this.statsFor(plan.name, kind);
    const isSource = kind === 'source';
    const extraArgs = isSource && (plan as SourcePlan).resumable && resume ? ['--resume', JSON.stringify(resume)] : [];
    const inherit = isSource && (plan as SourcePlan).type === 'stdin' ? 'stdin' : undefined;
    const proc = this.spawn(plan.command, plan.name, stats, { extraArgs, downstream, ...(inherit ? { inherit } : {}) });
    if (proc.controlled) this.countReports(proc, stats);
    stats.generation++;
    stats.pid = proc.pid;
    stats.heardAt = proc.controlled ? Date.now() : undefined;
    if (watched) this.watch(proc);
    return { proc, stats };
  }

  /**
   * Spawns a sink with its where-filter; only its feed from the stages is left to connect. A sink that
   * reads the log itself needs no feed: it resumes after what it holds and reports how far it has read.
   */
  private async spawnUnit(plan: SinkPlan, watched = true): Promise<SinkUnit> {
    const stats = this.statsFor(plan.name, 'sink');
    const sink = this.spawn(plan.command, plan.name, stats, { extraArgs: plan.logInput?.args ?? [], inherit: 'stdout', control: !plan.logInput });
    stats.generation++;
    stats.pid = sink.pid;
    stats.heardAt = sink.controlled || plan.logInput ? Date.now() : undefined;
    if (sink.controlled) this.countReports(sink, stats);
    const unit: SinkUnit = { plan, sink, where: undefined, whereLink: undefined, progress: {}, ended: false, stats };
    if (plan.whereCommand) {
      const feed = [this.target(sink, stats)];
      unit.where = this.spawn(plan.whereCommand, `${plan.name}:where`, stats, { downstream: feed });
      unit.whereLink = this.linkFrom(unit.where, undefined, feed);
    }
    if (plan.logInput) this.countReports(sink, stats, (report) => (unit.progress = report.at));
    if (watched) for (const proc of this.unitProcs(unit)) this.watch(proc, unit);
    return unit;
  }

  private unitProcs(unit: SinkUnit): StageProcess[] {
    return [unit.where, unit.sink].filter((p): p is StageProcess => p !== undefined);
  }

  /** Where the stages' output goes in: the where-filter or the sink itself, for each sink fed by the stages. */
  private fanoutTargets(): PumpTarget[] {
    const targets: PumpTarget[] = [];
    for (const unit of this.units.values()) {
      if (readsLog(unit)) continue;
      targets.push(unit.where ? this.target(unit.where, undefined) : this.target(unit.sink, unit.stats));
    }
    return targets;
  }

  private chain(): Node[] {
    return this.source ? [this.source, ...this.stages] : [...this.stages];
  }

  private lastLink(): Link | undefined {
    return this.chain().at(-1)?.link;
  }

  /** Starts the sinks fed by the stages, then the stages from the last to the source, each writing into the next. */
  private async startMain(resume: PositionMap | undefined): Promise<void> {
    for (const sink of this.plan.sinks) if (!sink.logInput) this.units.set(sink.name, await this.spawnUnit(sink));
    const plans = [this.plan.source as SourcePlan | StagePlan, ...this.plan.stages];
    let downstream = this.fanoutTargets();
    const nodes: Node[] = [];
    for (let i = plans.length - 1; i >= 0; i--) {
      const plan = plans[i] as SourcePlan | StagePlan;
      const { proc, stats } = i === 0 ? this.spawnProc(plan, 'source', downstream, resume) : this.spawnProc(plan, 'stage', downstream);
      nodes.unshift({ plan, proc, link: this.linkFrom(proc, stats, downstream, i === 0, i === 0 ? undefined : (plan as StagePlan)), stats });
      downstream = [this.target(proc, stats)];
    }
    [this.source] = nodes as [Node];
    this.stages = nodes.slice(1);
  }

  private mainProcs(): StageProcess[] {
    const procs = this.chain().map((n) => n.proc);
    for (const unit of this.units.values()) if (!readsLog(unit)) procs.push(...this.unitProcs(unit));
    return procs;
  }

  private allProcs(): StageProcess[] {
    const procs = this.chain().map((n) => n.proc);
    for (const unit of this.units.values()) procs.push(...this.unitProcs(unit));
    return procs;
  }

  private async exited(procs: StageProcess[]): Promise<void> {
    await Promise.all(procs.map((p) => p.exit));
  }


  private watch(proc: StageProcess, unit?: SinkUnit): void {
    // Ready, or ended cleanly: whatever an earlier process of the component did has been made up for.
    void proc.ready?.then((ok) => ok && this.failures.recovered(proc.name));
    void proc.exit.then((status) => {
      // No process of it runs (until a restart): it is not silent, it is gone.
      const stats = this.stats.get(proc.name);
      if (stats && stats.pid === proc.pid) stats.heardAt = undefined;
      const how = status.error ? messageOf(status.error) : status.signal ? `signal ${status.signal}` : `code ${status.code}`;
      if (status.code === 0) this.failures.recovered(proc.name);
      else if (proc.expected !== 'kill' && !(proc.expected === 'stop' && status.signal === 'SIGTERM')) this.failures.crashed(proc.name, proc.describeExit(status));
      // Also while the pipeline stops: a view told where the log ends may only then find its views file bad.
      if (proc.expected !== 'kill' && isConfigurationExit(proc, status)) {
        this.refusedConfiguration(proc, status);
        return;
      }
      if (proc.expected) {
        const stopped = proc.expected === 'stop' && status.signal === 'SIGTERM';
        if (proc.expected !== 'kill' && status.code !== 0 && !stopped) {
          this.log(`cqp: ${proc.name} exited with ${how} while stopping`);
          if (this.state === 'stopping') this.failed = true;
        }
        return;
      }
      if (unit && proc === unit.sink && unit.plan.logInput?.follow === false && status.code === 0) {
        // A bounded log read (a replay) has reached its end.
        proc.expected = 'end';
        unit.ended = true;
        this.endIfReadersDone();
        return;
      }
      if (unit && proc === unit.sink && proc.outputClosed && status.code === 0 && this.state === 'running') {
        // Its stdout (the supervisor's own) was closed, as by `| head -1`: nothing more can go there.
        proc.expected = 'end';
        this.log(`cqp: ${proc.name}: stdout was closed; stopping the pipeline`);
        void this.stop();
        return;
      }
      if (proc.outputClosed && status.code === 0) {
        // What it wrote into has exited (or is exiting): that process's own exit says what happened (a
        // sink whose stdout was closed, a crash) and what to do; this one is not restarted on its account.
        proc.expected = 'end';
        return;
      }
      proc.expected = 'kill';
      if (this.state === 'stopping' || this.state === 'done') {
        // Exit 0 while the pipeline stops is a drain (or an output closed under it, as by `| head -1`).
        if (status.code === 0) return;
        this.log(`cqp: ${proc.name} exited with ${how} while stopping`);
        this.failed = true;
        return;
      }
      if (proc === this.source?.proc && status.code === 0) {
        this.log(`cqp: the source has ended; draining`);
        void this.stop();
        return;
      }
      const refused = refusalOf(proc, status);
      // Queued: a refusal while the pipeline starts stops it once the start is done.
      if (refused) {
        void this.serial(async () => this.stopFor(proc, new CqpError('LOCKED', refused)));
        return;
      }
      this.log(`cqp: ${proc.name} exited unexpectedly (${how}); restarting it`);
      void this.serial(() => (unit && readsLog(unit) ? this.recoverUnit(unit) : this.recoverMain(proc, unit)));
    });
  }

  /** A component refused its configuration at start: restarting cannot help, so the run stops (exit 2). */
  private refusedConfiguration(proc: StageProcess, status: ExitStatus): void {
    proc.expected = 'kill';
    const message = proc.describeExit(status);
    this.failures.refusedConfiguration(proc.name, message);
    const why = status.error || proc.lastStderr === undefined ? message : `exit ${status.code}; its message is above`;
    this.log(`cqp: ${proc.name}: configuration error at start (${why}); a new process would fail the same way, so the pipeline stops (exit 2)`);
    void this.stop();
  }

  /** True when the pipeline may go on after another crash; stops it otherwise. */
  private async noteCrash(name: string): Promise<number | undefined> {
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < this.crashWindowMs);
    this.crashes.push(now);
    const stats = this.stats.get(name);
    if (stats) stats.restarts++;
    if (this.crashes.length > this.maxCrashes) {
      this.log(`cqp: ${this.crashes.length} crashes within ${Math.round(this.crashWindowMs / 1000)} s (last: ${name}); stopping the pipeline`);
      this.killAll(1);
      return undefined;
    }
    return Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (this.crashes.length - 1));
  }

  /**
   * A process between the source and the sinks died: what it held is gone, and so is everything
   * upstream of it in flight. Stop the upstream at once, let the downstream drain into the sinks, then
   * start again from the positions the exactly-once sinks hold (they skip what they already have;
   * at-least-once sinks may see some events again).
   */
  private async recoverMain(crashed: StageProcess, unit: SinkUnit | undefined): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'recovering';
    const chain = this.chain();
    const at = chain.findIndex((n) => n.proc === crashed);
    const current = unit ? this.units.get(unit.plan.name) === unit : at >= 0;
    if (!current) {
      this.state = 'running';
      return;
    }
    const upstream = unit ? chain : chain.slice(0, Math.max(0, at));
    let inFlight = 0;
    for (const node of upstream) {
      node.link.endTargets = false;
      node.link.retarget([]);
      inFlight += Math.max(0, node.stats.in - node.stats.out);
      node.proc.stop('SIGKILL');
    }
    if (unit) {
      if (unit.where && crashed === unit.sink) {
        unit.whereLink?.retarget([]);
        unit.where.stop('SIGKILL');
      }
      // The stages were stopped: end the other sinks' input so they drain and exit.
      for (const other of this.units.values()) {
        if (other === unit || readsLog(other)) continue;
        const feed = other.where ?? other.sink;
        feed.expected ??= 'end';
        feed.stdin.end();
      }
    }
    await this.exited(this.mainProcs());
    for (const [name, other] of [...this.units]) if (!readsLog(other)) this.units.delete(name);
    const delay = await this.noteCrash(crashed.name);
    if (delay === undefined) return;
    if (!this.plan.source.resumable) {
      this.log(`cqp: the ${this.plan.source.type} source cannot replay: up to ${inFlight} events in flight may be lost`);
    }
    await sleep(delay);
    if (this.stateIs('stopping')) return;
    await this.startMain(await this.resumeFor(this.source?.link.positions));
    this.state = 'running';
  }

  private stateIs(state: Supervisor['state']): boolean {
    return this.state === state;
  }

  /** A sink reading the log died: restart it; it resumes from what it holds. */
  private async recoverUnit(unit: SinkUnit): Promise<void> {
    if (this.state !== 'running' || this.units.get(unit.plan.name) !== unit) return;
    for (const proc of this.unitProcs(unit)) proc.stop('SIGKILL');
    await this.exited(this.unitProcs(unit));
    const delay = await this.noteCrash(unit.plan.name);
    if (delay === undefined) return;
    await sleep(delay);
    if (this.state !== 'running') return;
    this.units.set(unit.plan.name, await this.spawnUnit(unit.plan));
  }

  /**
   * Where the source resumes: the smallest position its exactly-once sinks hold; without such sinks,
   * after the last event the supervisor forwarded (`forwarded`).
   */
  private async resumeFor(forwarded: PositionMap | undefined): Promise<PositionMap | undefined> {
    const durable = await resumePositions(this.plan.sinks);
    if (durable !== undefined) return durable;
    if (forwarded && Object.keys(forwarded).length > 0) {
      this.log('cqp: no exactly-once sink holds positions; resuming after the last event forwarded (events in flight may be lost)');
      return { ...forwarded };
    }
    return undefined;
  }


  /** Stops the source, lets every stage and sink drain, then resolves `result` (SIGINT/SIGTERM, or the source ended). */
  stop(): Promise<void> {
    if (this.state === 'stopping' || this.state === 'done') return Promise.resolve();
    this.state = 'stopping';
    const limit = this.options.drainTimeoutMs;
    if (limit !== undefined) this.watchDrain(limit);
    return this.serial(async () => {
      this.source?.proc.stop('SIGTERM');
      await this.exited(this.mainProcs());
      await this.stopFollowers();
      this.finish(this.failed ? 1 : 0);
    });
  }

  /** Without stages to wait for, the pipeline ends once every sink reading a bounded stretch of the log has. */
  private endIfReadersDone(): void {
    if (this.state !== 'running' || this.fedByStages()) return;
    if ([...this.units.values()].every((u) => u.ended)) void this.stop();
  }

  /**
   * Stops the sinks following the log once they hold its last record. The log sink has exited and
   * flushed by now, so the log's end is read from the file; each view is told it and stops by itself
   * once it has read that far and written what it read. What it then holds is read back from its
   * database: a view short of the end (it crashed, or read nothing new for FOLLOWER_STALL_MS) is named
   * and fails the run, since a run that says it succeeded must not leave a view behind its log.
   */
  private async stopFollowers(): Promise<void> {
    // A view that refused its configuration has nothing to read to: it is named among the failures.
    const followers = [...this.units.values()].filter((u) => u.plan.logInput?.follow && !this.failures.isMisconfigured(u.plan.name));
    if (followers.length === 0) return;
    let end: LogEnd | undefined;
    try {
      end = await readLogEnd(followers[0]?.plan.logInput?.path as string);
    } catch (error) {
      this.log(`cqp: cannot read the log's end (${messageOf(error)}); stopping the views where they are`);
      this.failed = true;
    }
    const target = end && end.seq > 0 ? end : undefined;
    await Promise.all(followers.map((unit) => this.stopFollower(unit, target)));
    if (!target) return;
    for (const sinkEnd of await sinkEnds(followers.map((u) => u.plan), { end: target })) {
      if (!sinkEnd.short || this.failures.isMisconfigured(sinkEnd.name)) continue;
      this.log(`cqp: ${sinkEnd.name} stopped ${sinkEnd.text} of the log; it resumes from there on the next run`);
      this.failed = true;
    }
  }

  /** Lets one view read to `target` and stop; one that died before shutdown is started again to get there. */
  private async stopFollower(unit: SinkUnit, target: LogEnd | undefined): Promise<void> {
    if (target && !unit.sink.running && unit.sink.expected === 'kill' && !lockedOut(unit.sink) && this.units.get(unit.plan.name) === unit) {
      this.log(`cqp: ${unit.plan.name} is not running; starting it again to read to the log's end`);
      unit = await this.spawnUnit(unit.plan);
      this.units.set(unit.plan.name, unit);
    }
    if (target && unit.sink.running) {
      unit.sink.expected ??= 'end';
      unit.sink.tell({ cqp: 'until', at: { [target.key]: String(target.seq) } });
      let seen: string | undefined;
      let since = Date.now();
      while (unit.sink.running) {
        const reached = unit.progress[target.key];
        // It has read to the end and is writing the last of it: the signal only hurries its exit.
        if (reached !== undefined && compareN(reached, String(target.seq)) >= 0) break;
        if (reached !== seen) [seen, since] = [reached, Date.now()];
        else if (Date.now() - since > FOLLOWER_STALL_MS) {
          this.log(`cqp: ${unit.plan.name} has not read further for ${FOLLOWER_STALL_MS / 1000} s (at ${reached ?? 'nothing'} of ${target.seq}); stopping it there`);
          break;
        }
        await sleep(20);
      }
    }
    // It stops reading and writes what it has read.
    unit.sink.stop('SIGTERM');
    await this.exited(this.unitProcs(unit));
  }

  /**
   * Where each exactly-once sink ended, read from the files (call once the pipeline has stopped):
   * beside the end of the log the views follow, when there is one.
   */
  async sinkEnds(): Promise<SinkEnd[]> {
    const path = this.plan.sinks.find((s) => s.logInput)?.logInput?.path;
    const end = path === undefined ? undefined : await readLogEnd(path).catch(() => undefined);
    const writer = this.plan.sinks.find((s) => !s.logInput && s.options.path === path)?.name;
    return sinkEnds(this.plan.sinks, end ? { end, writer } : undefined);
  }

  /**
   * The drain took longer than its limit: names what holds it (a stage that stopped reporting, or else
   * the first one still running in pipeline order, which the rest wait for), kills what is left, exit 1.
   */
  /**
   * The drain's limit counts time without progress, not time: a view catching up on a long log at
   * shutdown moves its counts and is waited for; a stage that holds the drain (stopped, hung) is not.
   */
  private watchDrain(limit: number): void {
    const moved = (): number => this.components().reduce((sum, c) => sum + c.in + c.out, 0);
    let last = moved();
    let since = Date.now();
    this.drainLimit = setInterval(() => {
      const now = moved();
      if (now !== last) [last, since] = [now, Date.now()];
      else if (Date.now() - since >= limit) this.drainTimedOut(limit);
    }, Math.min(1000, limit / 4));
    this.drainLimit.unref();
  }

  private drainTimedOut(limit: number): void {
    clearInterval(this.drainLimit);
    if (this.state === 'done') return;
    const left = this.allProcs().filter((p) => p.running);
    const label = (p: StageProcess): string => `${p.name} (pid ${p.pid ?? '?'})`;
    const silent = (p: StageProcess): number | undefined => {
      const stats = this.stats.get(p.name);
      return stats && stats.pid === p.pid ? stalledFor(stats) : undefined;
    };
    const holder = left.find((p) => silent(p) !== undefined) ?? left[0];
    if (holder) {
      const quiet = silent(holder);
      const why = quiet === undefined ? 'still running' : `stalled, no report for ${quiet} s`;
      const rest = left.filter((p) => p !== holder).map(label);
      this.log(`cqp: the drain made no progress for ${limit / 1000} s: ${label(holder)} holds it (${why}); killing ${rest.length > 0 ? `it and ${rest.join(', ')}` : 'it'} (a larger --drain-timeout waits longer)`);
    } else {
      this.log(`cqp: the drain made no progress for ${limit / 1000} s; stopping`);
    }
    this.failed = true;
    this.killAll(1);
  }

  /** Kills whatever still runs, synchronously (the supervisor itself is exiting: no orphans left behind). */
  killRemaining(): void {
    for (const proc of this.allProcs()) if (proc.running) proc.stop('SIGKILL');
  }

  /** Kills every process at once (a second signal, or too many crashes). */
  killAll(code = 1): void {
    this.state = 'stopping';
    for (const proc of this.allProcs()) proc.stop('SIGKILL');
    void this.exited(this.allProcs()).then(() => this.finish(code));
  }

  private finish(code: number): void {
    if (this.state === 'done') return;
    clearInterval(this.drainLimit);
    this.state = 'done';
    this.resolveResult(this.failures.exitCode(code));
  }

  /** Why the run failed, one line per component that failed for good (empty when it did not). */
  failureMessages(): string[] {
    return this.failures.messages();
  }


  /** Queues a reload of the pipeline file; requests made while one waits are merged into it. */
  requestReload(): Promise<void> {
    if (this.reloadQueued) return this.busy.then(() => {});
    this.reloadQueued = true;
    return this.serial(async () => {
      this.reloadQueued = false;
      if (this.state !== 'running') return;
      await this.reload();
    });
  }

  private refuse(n: number, why: string): void {
    this.reloads.failed++;
    this.log(`cqp: reload #${n} refused: ${why}`);
  }

  private async reload(): Promise<void> {
    let text: string;
    try {
      text = readFileSync(this.plan.file, 'utf8');
    } catch (error) {
      this.refuse(++this.reloadNo, `cannot read ${this.plan.file}: ${messageOf(error)}`);
      return;
    }
    // Editors save in steps and the watcher and the poll both fire: act once per content.
    if (text === this.plan.text || text === this.refusedText) return;
    let next: PipelinePlan | undefined;
    let problem = '';
    for (let look = 1; ; look++) {
      try {
        next = parsePipeline(text, this.plan.file);
        break;
      } catch (error) {
        problem = messageOf(error);
      }
      // A file that does not parse may be half-saved: refuse it only once it has stopped changing.
      await sleep(SETTLE_MS);
      let again: string;
      try {
        again = readFileSync(this.plan.file, 'utf8');
      } catch {
        again = text;
      }
      if (again === text || look >= 3) break;
      text = again;
      if (text === this.plan.text) return;
    }
    const n = ++this.reloadNo;
    if (next === undefined) {
      this.refusedText = text;
      this.refuse(n, problem);
      return;
    }
    this.refusedText = undefined;
    const diff = reloadDiff(this.plan, next);
    if (diff.empty) {
      this.plan = next;
      this.reloads.ok++;
      this.log(`cqp: reload #${n}: no changes`);
      return;
    }
    // Start the new processes first; if one fails, nothing has been touched yet.
    const fresh: Array<{ plan: StagePlan; proc: StageProcess; stats: ComponentStats }> = [];
    const added: SinkUnit[] = [];
    try {
      if (diff.stages) {
        // From the last: each writes into the one after it, the last into what follows the stretch.
        let downstream = this.stretchDownstream(diff.stages);
        for (const plan of next.stages.slice(diff.stages.prefix, diff.stages.newEnd).reverse()) {
          const f = { plan, ...this.spawnFresh(plan, downstream) };
          fresh.unshift(f);
          downstream = [this.target(f.proc, f.stats)];
        }
      }
      for (const name of diff.sinks.added) added.push(await this.spawnUnit(next.sinks.find((s) => s.name === name) as SinkPlan, false));
      const procs = [...fresh.map((f) => f.proc), ...added.flatMap((u) => this.unitProcs(u))];
      await Promise.all(procs.map((p) => p.started(this.graceMs)));
    } catch (error) {
      for (const f of fresh) f.proc.stop('SIGKILL');
      for (const u of added) for (const p of this.unitProcs(u)) p.stop('SIGKILL');
      await this.exited([...fresh.map((f) => f.proc), ...added.flatMap((u) => this.unitProcs(u))]);
      this.restoreStats(diff, next);
      this.refusedText = text;
      this.refuse(n, messageOf(error));
      return;
    }
    // Started and kept: from now on their exits are crashes.
    for (const f of fresh) this.watch(f.proc);
    for (const u of added) for (const p of this.unitProcs(u)) this.watch(p, u);
    const problems: string[] = [];
    if (diff.sourceChanged) await this.swapSource(next.source, problems);
    if (diff.stages) await this.swapStages(diff.stages, fresh);
    await this.swapSinks(diff, next, added, problems);
    for (const name of diff.removed) if (!next.stages.some((s) => s.name === name) && !next.sinks.some((s) => s.name === name) && next.source.name !== name) this.stats.delete(name);
    this.plan = next;
    if (problems.length > 0) {
      this.reloads.failed++;
      this.log(`cqp: reload #${n} partly refused: ${problems.join('; ')}`);
      return;
    }
    this.reloads.ok++;
    this.log(`cqp: reload #${n}: ${describeDiff(diff)}`);
  }

  /** A stage process started by a reload; its counters continue the component's. */
  private spawnFresh(plan: StagePlan, downstream: readonly PumpTarget[]): { proc: StageProcess; stats: ComponentStats } {
    return this.spawnProc(plan, 'stage', downstream, undefined, false);
  }

  /** Where the output of a rebuilt stretch of stages goes: the stage after it, or the sinks. */
  private stretchDownstream(range: NonNullable<ReloadDiff['stages']>): PumpTarget[] {
    const after = this.stages[range.oldEnd];
    if (after) return [this.target(after.proc, after.stats)];
    return [...(this.lastLink()?.currentTargets ?? [])];
  }

  /** After a refused reload: the generations counted for processes that never ran are given back. */
  private restoreStats(diff: ReloadDiff, next: PipelinePlan): void {
    if (diff.stages) {
      for (const plan of next.stages.slice(diff.stages.prefix, diff.stages.newEnd)) {
        const stats = this.stats.get(plan.name);
        const running = this.stages.find((s) => s.plan.name === plan.name);
        if (!stats) continue;
        if (running) {
          stats.generation--;
          stats.pid = running.proc.pid;
        } else {
          this.stats.delete(plan.name);
        }
      }
    }
    for (const name of diff.sinks.added) this.stats.delete(name);
  }

  /**
   * Replaces the source: the old one is stopped (it finishes the events in hand), everything it sent
   * is forwarded, and the new one resumes after the last position forwarded.
   */
  private async swapSource(plan: SourcePlan, problems: string[]): Promise<void> {
    const old = this.source as Node;
    const targets = [...old.link.currentTargets];
    old.link.endTargets = false;
    old.proc.stop('SIGTERM');
    await old.link.done;
    await old.proc.exit;
    const resume = laterPositions((await resumePositions(this.plan.sinks)) ?? {}, old.link.positions);
    if (old.plan.name !== plan.name) this.stats.delete(old.plan.name);
    let started = this.spawnProc(plan, 'source', targets, resume, false);
    try {
      await started.proc.started(this.graceMs);
      this.watch(started.proc);
    } catch (error) {
      started.proc.stop('SIGKILL');
      await started.proc.exit;
      problems.push(`${messageOf(error)}; the previous source goes on`);
      started = this.spawnProc(old.plan, 'source', targets, resume);
      plan = old.plan as SourcePlan;
    }
    const link = this.linkFrom(started.proc, started.stats, targets, true);
    this.source = { plan, proc: started.proc, link, stats: started.stats };
  }

  /**
   * Rebuilds the stretch of stages [prefix, oldEnd) as `fresh`: the flow is held after the last whole
   * line before the stretch, the old stretch gets end-of-input and is drained downstream, then the new
   * stretch is connected and the flow goes on. Stages before and after keep their processes.
   */
  private async swapStages(range: NonNullable<ReloadDiff['stages']>, fresh: Array<{ plan: StagePlan; proc: StageProcess; stats: ComponentStats }>): Promise<void> {
    const chain = this.chain();
    const cut = chain[range.prefix] as Node;
    const old = this.stages.slice(range.prefix, range.oldEnd);
    await cut.link.hold();
    let downstream = this.stretchDownstream(range);
    if (old.length > 0) {
      const last = old[old.length - 1] as Node;
      last.link.endTargets = false;
      const first = old[0] as Node;
      first.proc.expected ??= 'end';
      first.proc.stdin.end();
      await last.link.done;
      await this.exited(old.map((o) => o.proc));
    }
    const nodes: Node[] = [];
    for (let i = fresh.length - 1; i >= 0; i--) {
      const f = fresh[i] as (typeof fresh)[number];
      nodes.unshift({ plan: f.plan, proc: f.proc, stats: f.stats, link: this.linkFrom(f.proc, f.stats, downstream, false, f.plan) });
      downstream = [this.target(f.proc, f.stats)];
    }
    this.stages.splice(range.prefix, range.oldEnd - range.prefix, ...nodes);
    cut.link.retarget(downstream);
    await cut.link.release();
  }

  /** Removes, replaces and adds sinks between two lines of the stages' output. */
  private async swapSinks(diff: ReloadDiff, next: PipelinePlan, added: SinkUnit[], problems: string[]): Promise<void> {
    const { sinks } = diff;
    if (sinks.added.length + sinks.changed.length + sinks.removed.length === 0) return;
    const fan = this.lastLink();
    await fan?.hold();
    // A replaced sink is stopped before its successor starts: both may need the same file (the log's lock).
    const going = [...sinks.removed, ...sinks.changed]
      .map((name) => this.units.get(name) as SinkUnit)
      .sort((a, b) => Number(readsLog(b)) - Number(readsLog(a)));
    for (const unit of going) {
      this.units.delete(unit.plan.name);
      if (readsLog(unit)) {
        unit.sink.stop('SIGTERM');
      } else {
        fan?.retarget(this.fanoutTargets());
        const feed = unit.where ?? unit.sink;
        feed.expected ??= 'end';
        feed.stdin.end();
      }
      await this.exited(this.unitProcs(unit));
    }
    for (const name of sinks.changed) {
      const plan = next.sinks.find((s) => s.name === name) as SinkPlan;
      let unit = await this.spawnUnit(plan, false);
      try {
        await Promise.all(this.unitProcs(unit).map((p) => p.started(this.graceMs)));
        for (const p of this.unitProcs(unit)) this.watch(p, unit);
      } catch (error) {
        for (const p of this.unitProcs(unit)) p.stop('SIGKILL');
        const old = going.find((u) => u.plan.name === name) as SinkUnit;
        problems.push(`${messageOf(error)}; sink ${name} keeps its previous definition`);
        unit = await this.spawnUnit(old.plan);
        next.sinks[next.sinks.indexOf(plan)] = old.plan;
      }
      this.units.set(name, unit);
    }
    for (const unit of added) this.units.set(unit.plan.name, unit);
    fan?.retarget(this.fanoutTargets());
    await fan?.release();
  }


  /** Counters of the source, the stages and the sinks, in pipeline order. */
  components(): ComponentStats[] {
    const names = [this.plan.source.name, ...this.plan.stages.map((s) => s.name), ...this.plan.sinks.map((s) => s.name)];
    return names.map((n) => this.stats.get(n)).filter((s): s is ComponentStats => s !== undefined);
  }

  /** The `/status` document. */
  status(): PipelineStatus {
    return {
      stages: this.components().map((s) => ({ name: s.name, pid: s.pid ?? null, generation: s.generation, in: s.in, out: s.out, errors: s.errors, stalled: stalledFor(s) ?? null })),
      reloads: { ...this.reloads },
    };
  }
}
