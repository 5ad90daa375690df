/**
 * Swapping stages on a reload. The stretch of stages between the first and the last change (diff.ts)
 * is rewired while the flow waits before it: the stages whose definition changed, and those removed,
 * drain and stop; new and changed ones start as new processes; stages kept unchanged keep their
 * process and are only handed a new place in the chain (their stdin is fed by a new upstream, their
 * output cut and handed to a new downstream), so a `dedupe` window survives a reload of its neighbours
 * and a pure reorder restarts nothing.
 *
 * Every event in the stretch when the flow stops passes the old stretch to its end before any event
 * enters the new one: the stages changed in one save switch together, and each event passes exactly
 * one version of each stage, in order.
 */
import type { PipelinePlan, StagePlan } from './config.js';
import type { ComponentStats, Context, Node } from './context.js';
import { specOf, type ReloadDiff } from './diff.js';
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

/** Where the output of the stretch goes: the stage after it, or the sinks. */
function stretchDownstream(ctx: Context, range: Stretch): PumpTarget[] {
  const after = ctx.stages[range.oldEnd];
  if (after) return [target(after.proc, after.stats)];
  return [...(ctx.lastLink()?.currentTargets ?? [])];
}

/**
 * The running stages of the stretch that the new stretch keeps, by name: same definition, and a cqp
 * component, which reports its counts and can be cut between two lines. A `run:` program may hold
 * output back (a buffered stdout) until its input ends, so it is drained by end-of-input and restarted.
 */
function keptStages(ctx: Context, range: Stretch, next: PipelinePlan): Map<string, Node> {
  const kept = new Map<string, Node>();
  const wanted = new Map(next.stages.slice(range.prefix, range.newEnd).map((s) => [s.name, s]));
  for (const node of ctx.stages.slice(range.prefix, range.oldEnd)) {
    const plan = wanted.get(node.plan.name);
    if (plan && specOf(plan) === specOf(node.plan) && ctx.plan.dir === next.dir && node.proc.controlled) kept.set(node.plan.name, node);
  }
  return kept;
}

/**
 * Starts the new processes of the stretch into `fresh`, not yet watched: from the last, each writing into the one
 * after it, the last into what follows the stretch. Their counters continue the components'.
 */
export function startStages(ctx: Context, range: Stretch, next: PipelinePlan, fresh: FreshStage[]): void {
  const kept = keptStages(ctx, range, next);
  let downstream = stretchDownstream(ctx, range);
  for (const plan of next.stages.slice(range.prefix, range.newEnd).reverse()) {
    const keep = kept.get(plan.name);
    if (keep) {
      downstream = [target(keep.proc, keep.stats)];
      continue;
    }
    const f = { plan, ...spawnProc(ctx, plan, 'stage', downstream, undefined, false) };
    fresh.unshift(f);
    downstream = [target(f.proc, f.stats)];
  }
}

/**
 * Resolves once a cqp stage has done all it was given: two reports in a row with the same counts. A
 * stage reports moved counts four times a second and unchanged ones about once a second, so equal
 * counts mean it read and wrote nothing for a second while its input was waiting in its pipe.
 */
function settled(proc: StageProcess): Promise<unknown> {
  const counted = proc.onReport;
  let last: { in: number; out: number } | undefined;
  const quiet = new Promise<void>((resolve) => {
    proc.onReport = (report) => {
      counted?.(report);
      if (last && report.in === last.in && report.out === last.out) resolve();
      last = report;
    };
  });
  return Promise.race([quiet, proc.exit]).finally(() => (proc.onReport = counted));
}

/**
 * Rewires the stretch [prefix, oldEnd) as the new stretch [prefix, newEnd) made of the kept stages and
 * `fresh`. The flow is held after the last whole line before the stretch; then, from the first stage
 * on, each old stage finishes what it was given: a stage that goes gets end-of-input and exits, a kept
 * one settles and its output is cut. Then the chain is reconnected in the new order and the flow goes on.
 */
export async function swapStages(ctx: Context, range: Stretch, fresh: FreshStage[], next: PipelinePlan): Promise<void> {
  const kept = keptStages(ctx, range, next);
  const cut = ctx.chain()[range.prefix] as Node;
  const old = ctx.stages.slice(range.prefix, range.oldEnd);
  await cut.link.hold();
  for (const node of old) {
    if (kept.has(node.plan.name)) {
      // Its input is never ended: it stays open for its next upstream.
      await settled(node.proc);
      await node.link.hold();
    } else {
      node.link.endTargets = false;
      node.proc.expected ??= 'end';
      node.proc.stdin.end();
      await node.link.done;
      await node.proc.exit;
    }
  }
  let downstream = stretchDownstream(ctx, range);
  const nodes: Node[] = [];
  for (const plan of next.stages.slice(range.prefix, range.newEnd).reverse()) {
    let node = kept.get(plan.name);
    if (node) {
      node.plan = plan;
      node.link.retarget(downstream);
    } else {
      const f = fresh.find((s) => s.plan === plan) as FreshStage;
      node = { plan, proc: f.proc, stats: f.stats, link: linkFrom(ctx, f.proc, f.stats, downstream, false, plan) };
    }
    nodes.unshift(node);
    downstream = [target(node.proc, node.stats)];
  }
  ctx.stages.splice(range.prefix, range.oldEnd - range.prefix, ...nodes);
  // From the end of the stretch back: each output is connected before anything is sent into it.
  for (const node of [...nodes].reverse()) if (kept.has(node.plan.name)) await node.link.release();
  cut.link.retarget(downstream);
  await cut.link.release();
}
