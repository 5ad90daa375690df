/**
 * What every part of the supervisor shares: the plan, the processes that run it and their counters, the
 * state machine, and the queue that runs reloads, crash recovery and shutdown one at a time (`serial`),
 * so each sees a pipeline at rest between two of them.
 */
import type { PositionMap } from '../core/position.js';
import type { PipelinePlan, SinkPlan, SourcePlan, StagePlan } from './plan.js';
import { Failures } from './failures.js';
import type { Link } from './link.js';
import { Lifecycle, type State } from './lifecycle.js';
import type { StageProcess } from './process.js';
import { Taps } from './taps.js';

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
  /** Lines its processes mirrored for `cqp tap` (zero while nobody taps it). */
  mirrored: number;
  restarts: number;
  /** What its running process does besides, as it last reported (a view being rebuilt, with its progress). */
  activity?: string | undefined;
  /**
   * When its running process last reported (ms since the epoch): cqp components report at least once a
   * second, so a long silence means it is stopped or hung (see `stalledFor`). Undefined for a `run:`
   * program (it does not report) and while no process of it runs.
   */
  heardAt: number | undefined;
  /** A source reading its share of a group's input: the group, and the partitions its process holds now. */
  holding?: { group: string; partitions: number[] } | undefined;
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

/** The source or a stage: its process and the link from its output. */
export interface Node {
  plan: SourcePlan | StagePlan;
  proc: StageProcess;
  link: Link;
  stats: ComponentStats;
}

/** A sink with the hidden `cqp filter where` in front of it. */
export interface SinkUnit {
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
export function readsLog(unit: SinkUnit): boolean {
  return unit.plan.logInput !== undefined;
}

/** The running pipeline as every part of the supervisor sees it. */
export class Context {
  plan: PipelinePlan;
  readonly reloads = { ok: 0, failed: 0 };
  /**
   * Reload bookkeeping (reload.ts): the last reload's number, one waiting, and the content last refused
   * (the pipeline's text and what the files its components read held) with the files it named.
   */
  reloadNo = 0;
  reloadQueued = false;
  refused: { key: string; files: string[] } | undefined;
  source: Node | undefined;
  stages: Node[] = [];
  readonly units = new Map<string, SinkUnit>();
  readonly stats = new Map<string, ComponentStats>();
  readonly lifecycle = new Lifecycle();
  /** The `cqp tap` clients and what the processes mirror for them. */
  readonly taps: Taps = new Taps(this);
  /** Crash times within the window (recovery.ts). */
  crashes: number[] = [];
  /** Set when something went wrong while stopping: the run ends with exit 1. */
  failed = false;
  /** Components that failed for good: the run then ends with exit 1 and says why. */
  readonly failures = new Failures();
  readonly graceMs: number;
  readonly maxCrashes: number;
  readonly crashWindowMs: number;
  drainLimit: NodeJS.Timeout | undefined;
  /** Resolves `Supervisor.result`. */
  resolveResult: (code: number) => void = () => {};
  private busy: Promise<unknown> = Promise.resolve();

  constructor(
    plan: PipelinePlan,
    readonly options: SupervisorOptions,
  ) {
    this.plan = plan;
    this.graceMs = options.graceMs ?? 300;
    this.maxCrashes = options.maxCrashes ?? 5;
    this.crashWindowMs = options.crashWindowMs ?? 60_000;
  }

  get state(): State {
    return this.lifecycle.state;
  }

  log(line: string): void {
    this.options.log(line);
  }

  /** Runs `task` after every reload, recovery or shutdown step queued before it. */
  serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.busy.then(task, task);
    this.busy = run.catch(() => {});
    return run;
  }

  /** Resolves once every step queued so far has run. */
  idle(): Promise<void> {
    return this.busy.then(() => {});
  }

  statsFor(name: string, kind: ComponentStats['kind']): ComponentStats {
    let s = this.stats.get(name);
    if (!s) {
      s = { name, kind, pid: undefined, generation: 0, in: 0, out: 0, errors: 0, mirrored: 0, restarts: 0, heardAt: undefined };
      this.stats.set(name, s);
    }
    return s;
  }

  /** Counters of the source, the stages and the sinks, in pipeline order. */
  components(): ComponentStats[] {
    const names = [this.plan.source.name, ...this.plan.stages.map((s) => s.name), ...this.plan.sinks.map((s) => s.name)];
    return names.map((n) => this.stats.get(n)).filter((s): s is ComponentStats => s !== undefined);
  }

  fedByStages(): boolean {
    return this.plan.stages.length > 0 || this.plan.sinks.some((s) => !s.logInput);
  }

  chain(): Node[] {
    return this.source ? [this.source, ...this.stages] : [...this.stages];
  }

  lastLink(): Link | undefined {
    return this.chain().at(-1)?.link;
  }

  unitProcs(unit: SinkUnit): StageProcess[] {
    return [unit.where, unit.sink].filter((p): p is StageProcess => p !== undefined);
  }

  mainProcs(): StageProcess[] {
    const procs = this.chain().map((n) => n.proc);
    for (const unit of this.units.values()) if (!readsLog(unit)) procs.push(...this.unitProcs(unit));
    return procs;
  }

  allProcs(): StageProcess[] {
    const procs = this.chain().map((n) => n.proc);
    for (const unit of this.units.values()) procs.push(...this.unitProcs(unit));
    return procs;
  }

  async exited(procs: StageProcess[]): Promise<void> {
    await Promise.all(procs.map((p) => p.exit));
  }
}
