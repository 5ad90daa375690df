/**
 * The supervisor behind `cqp run`: the face the CLI sees. Its parts, each in its own file:
 *
 * - context.ts: what they share (the plan, the processes, their counters, one queue of steps);
 * - lifecycle.ts: the state machine (starting, running, recovering, stopping, done);
 * - wiring.ts: starting processes and connecting them;
 * - exits.ts: what a process's exit means;
 * - recovery.ts: restarting after a crash;
 * - shutdown.ts: draining, the views' catch-up, the drain limit;
 * - reload.ts and stage-swap.ts: hot reload.
 */
import type { ServerResponse } from 'node:http';
import type { PositionMap } from '../core/position.js';
import type { TapQuery } from './taps.js';
import type { PipelinePlan } from './plan.js';
import { Context, type ComponentStats, type SupervisorOptions } from './context.js';
import { filesRead } from './read-files.js';
import { requestReload } from './reload.js';
import { resumeFor } from './recovery.js';
import { endIfReadersDone, killAll, stop } from './shutdown.js';
import { readLogEnd, sinkEnds, type SinkEnd } from './sink-ends.js';
import { stalledFor } from './status.js';
import { spawnUnit, startMain } from './wiring.js';

export type { ComponentStats, SupervisorOptions } from './context.js';

/** The `/status` document; `stalled`: seconds since a silent stage's last report, or null. */
export interface PipelineStatus {
  stages: Array<{ name: string; pid: number | null; generation: number; in: number; out: number; errors: number; mirrored: number; stalled: number | null; activity: string | null }>;
  reloads: { ok: number; failed: number };
  /** A worker of a group (its source shares the group's input): the group, and the partitions it holds now. */
  group?: string;
  partitions?: number[];
}

export class Supervisor {
  readonly startedAt = Date.now();
  /** Where the source started: after the positions its exactly-once sinks held (undefined: from its beginning). */
  resumedFrom: PositionMap | undefined;
  /** Resolves with the exit code once the pipeline has stopped. */
  readonly result: Promise<number>;
  private readonly ctx: Context;

  constructor(plan: PipelinePlan, options: SupervisorOptions) {
    this.ctx = new Context(plan, options);
    this.result = new Promise((resolve) => (this.ctx.resolveResult = resolve));
  }

  /** The plan running now (a reload replaces it). */
  get plan(): PipelinePlan {
    return this.ctx.plan;
  }

  get reloads(): { ok: number; failed: number } {
    return this.ctx.reloads;
  }

  /** Starts every process of the pipeline. */
  async start(): Promise<void> {
    const ctx = this.ctx;
    await ctx.serial(async () => {
      // A source nothing reads is not started: in a replay without stages, every sink reads the log itself.
      if (ctx.fedByStages()) await startMain(ctx, (this.resumedFrom = await resumeFor(ctx, undefined)));
      for (const sink of ctx.plan.sinks) if (sink.logInput) ctx.units.set(sink.name, await spawnUnit(ctx, sink));
      ctx.lifecycle.enter('running');
      endIfReadersDone(ctx);
    });
  }

  /** Stops the source, lets every stage and sink drain, then resolves `result` (SIGINT/SIGTERM, or the source ended). */
  stop(): Promise<void> {
    return stop(this.ctx);
  }

  /** Queues a reload of the pipeline file and the files it names; requests made while one waits are merged into it. */
  requestReload(): Promise<void> {
    return requestReload(this.ctx);
  }

  /** The files a reload reads: the pipeline file, the files its components read, and those of a pipeline just refused. */
  watchedFiles(): string[] {
    return [...new Set([...filesRead(this.ctx.plan), ...(this.ctx.refused?.files ?? [])])];
  }

  /** Kills every process at once (a second signal, or too many crashes). */
  killAll(code = 1): void {
    killAll(this.ctx, code);
  }

  /** Kills whatever still runs, synchronously (the supervisor itself is exiting: no orphans left behind). */
  killRemaining(): void {
    for (const proc of this.ctx.allProcs()) if (proc.running) proc.stop('SIGKILL');
  }

  /** Why the run failed, one line per component that failed for good (empty when it did not). */
  failureMessages(): string[] {
    return this.ctx.failures.messages();
  }

  /**
   * Where each exactly-once sink ended, read from the files (call once the pipeline has stopped):
   * beside the end of the log the views follow, when there is one.
   */
  async sinkEnds(): Promise<SinkEnd[]> {
    const path = this.plan.sinks.find((s) => s.logInput)?.logInput?.path;
    const end = path === undefined ? undefined : await readLogEnd(path).catch(() => undefined);
    const writer = this.plan.sinks.find((s) => !s.logInput && s.store === path)?.name;
    return sinkEnds(this.plan.sinks, end ? { end, writer } : undefined);
  }

  /** Counters of the source, the stages and the sinks, in pipeline order. */
  components(): ComponentStats[] {
    return this.ctx.components();
  }

  /** Streams to `res` the events `query` asks for, until it goes away or the pipeline stops (`cqp tap`). */
  tap(query: TapQuery, res: ServerResponse): void {
    this.ctx.taps.open(query, res);
  }

  /** Ends every tap stream. */
  closeTaps(): void {
    this.ctx.taps.close();
  }

  /** The `/status` document. */
  status(): PipelineStatus {
    return {
      stages: this.components().map((s) => ({ name: s.name, pid: s.pid ?? null, generation: s.generation, in: s.in, out: s.out, errors: s.errors, mirrored: s.mirrored, stalled: stalledFor(s) ?? null, activity: s.activity ?? null })),
      reloads: { ...this.reloads },
      ...this.worker(),
    };
  }

  /** The group this `cqp run` works in and the partitions it holds now; nothing when it is no group's worker. */
  worker(): { group: string; partitions: number[] } | Record<string, never> {
    const group = this.plan.source.group;
    if (group === undefined) return {};
    const held = this.components().find((c) => c.kind === 'source')?.holding;
    return { group, partitions: held?.group === group ? [...held.partitions] : [] };
  }
}
