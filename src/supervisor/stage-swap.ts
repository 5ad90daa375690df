/**
 * Swapping stages on a reload. The stretch of stages between the first and the last change (diff.ts)
 * is rewired while the flow waits before it: the stages whose definition changed, and those removed,
 * drain and stop; new and changed ones start as new processes; stages kept unchanged keep their
 * process and are only handed a new place in the chain (their stdin is fed by a new upstream, their
 * output cut and handed to a new downstream), so a `dedupe` window survives a reload of its neighbours
 * and a pure reorder restarts nothing. A kept stage's output is cut in band, at a barrier line written
 * into its input after the last line of the old chain: however long it holds an event, or however slow
 * its downstream, no output of an old event goes into the new chain, and none of a new one into the old.
 *
 * Every event in the stretch when the flow stops passes the old stretch to its end before any event
 * enters the new one: the stages changed in one save switch together, and each event passes exactly
 * one version of each stage, in order.
 */
import type { PipelinePlan, StagePlan } from './plan.js';
import type { ComponentStats, Context, Node } from './context.js';
import { specOf, type ReloadDiff } from './diff.js';
import { barrierLine } from '../protocol.js';
import type { Barrier } from './link.js';
import type { StageProcess } from './process.js';
import { recoverMain } from './recovery.js';
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

let barriers = 0;

/** A barrier line of its own for a kept stage (see Link.holdAt). */
function barrierFor(proc: StageProcess): Barrier {
  const id = `${process.pid}.${++barriers}`;
  return { line: barrierLine(id), send: (cut) => proc.barrier(id, cut) };
}

/**
 * Rewires the stretch [prefix, oldEnd) as the new stretch [prefix, newEnd) made of the kept stages and
 * `fresh`. The flow is held after the last whole line before the stretch; then, from the first stage
 * on, each old stage finishes what it was given, once nothing more comes into it: a stage that goes
 * gets end-of-input and exits; a kept one is given a barrier line after its last input line and its
 * output is cut exactly where that line comes through (everything it wrote for the lines before went
 * to its old downstream, nothing after). Then the chain is reconnected in the new order, from its end
 * back, and the flow goes on.
 */
export async function swapStages(ctx: Context, range: Stretch, fresh: FreshStage[], next: PipelinePlan): Promise<void> {
  const kept = keptStages(ctx, range, next);
  const cut = ctx.chain()[range.prefix] as Node;
  const old = ctx.stages.slice(range.prefix, range.oldEnd);
  await cut.link.hold();
  let lost = false;
  for (const node of old) {
    if (kept.has(node.plan.name)) {
      // Its input is never ended: it stays open for its next upstream.
      await node.link.holdAt(barrierFor(node.proc));
    } else {
      node.link.endTargets = false;
      node.proc.expected ??= 'end';
      node.proc.stdin.end();
      await node.link.done;
      // Died while draining (a crash, kill -9): what it still held is gone.
      if ((await node.proc.exit).code !== 0) lost = true;
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
  const [first] = nodes;
  if (lost && first) {
    // No event may pass the gap, or the exactly-once sinks would hold positions past it and skip it on
    // resuming: the flow stays held, the new stretch drains what it has, and the chain is recovered
    // from the positions the sinks hold, as after any crash.
    first.proc.stop('SIGKILL');
    ctx.log(`cqp: a stage died while the reload drained it; recovering the pipeline from its sinks' positions`);
    void ctx.serial(() => recoverMain(ctx, first.proc, undefined));
    return;
  }
  await cut.link.release();
}
