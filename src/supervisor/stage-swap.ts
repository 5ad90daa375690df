/**
 * Swapping stages on a reload: the stretch of stages between the first and the last changed one is
 * rebuilt while the flow waits before it.
 */
import type { PipelinePlan, StagePlan } from './config.js';
import type { ComponentStats, Context, Node } from './context.js';
import type { ReloadDiff } from './diff.js';
import type { StageProcess } from './process.js';
import type { PumpTarget } from './pump.js';
import { linkFrom, spawnProc, target } from './wiring.js';

/** A stage process started by a reload, not yet connected. */
export interface FreshStage {
  plan: StagePlan;
  proc: StageProcess;
  stats: ComponentStats;
}

type Stretch = NonNullable<ReloadDiff['stages']>;

/** Where the output of a rebuilt stretch of stages goes: the stage after it, or the sinks. */
function stretchDownstream(ctx: Context, range: Stretch): PumpTarget[] {
  const after = ctx.stages[range.oldEnd];
  if (after) return [target(after.proc, after.stats)];
  return [...(ctx.lastLink()?.currentTargets ?? [])];
}

/**
 * Starts the new stretch of stages, not yet watched: from the last, each writes into the one after it,
 * the last into what follows the stretch. Their counters continue the components'.
 */
export function startStages(ctx: Context, range: Stretch, next: PipelinePlan): FreshStage[] {
  const fresh: FreshStage[] = [];
  let downstream = stretchDownstream(ctx, range);
  for (const plan of next.stages.slice(range.prefix, range.newEnd).reverse()) {
    const f = { plan, ...spawnProc(ctx, plan, 'stage', downstream, undefined, false) };
    fresh.unshift(f);
    downstream = [target(f.proc, f.stats)];
  }
  return fresh;
}

/**
 * Rebuilds the stretch of stages [prefix, oldEnd) as `fresh`: the flow is held after the last whole
 * line before the stretch, the old stretch gets end-of-input and is drained downstream, then the new
 * stretch is connected and the flow goes on. Stages before and after keep their processes.
 */
export async function swapStages(ctx: Context, range: Stretch, fresh: FreshStage[]): Promise<void> {
  const chain = ctx.chain();
  const cut = chain[range.prefix] as Node;
  const old = ctx.stages.slice(range.prefix, range.oldEnd);
  await cut.link.hold();
  let downstream = stretchDownstream(ctx, range);
  if (old.length > 0) {
    const last = old[old.length - 1] as Node;
    last.link.endTargets = false;
    const first = old[0] as Node;
    first.proc.expected ??= 'end';
    first.proc.stdin.end();
    await last.link.done;
    await ctx.exited(old.map((o) => o.proc));
  }
  const nodes: Node[] = [];
  for (let i = fresh.length - 1; i >= 0; i--) {
    const f = fresh[i] as FreshStage;
    nodes.unshift({ plan: f.plan, proc: f.proc, stats: f.stats, link: linkFrom(ctx, f.proc, f.stats, downstream, false, f.plan) });
    downstream = [target(f.proc, f.stats)];
  }
  ctx.stages.splice(range.prefix, range.oldEnd - range.prefix, ...nodes);
  cut.link.retarget(downstream);
  await cut.link.release();
}
