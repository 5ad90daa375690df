/**
 * Crash recovery: a stage or sink that dies is restarted with backoff, and the pipeline resumes from
 * the last durable position, so exactly-once sinks end up with every event once. Too many crashes
 * within a window stop the pipeline.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffMs } from '../core/backoff.js';
import type { PositionMap } from '../core/position.js';
import { readsLog, type Context, type SinkUnit } from './context.js';
import { resumePositions } from './positions.js';
import type { StageProcess } from './process.js';
import { killAll } from './shutdown.js';
import { spawnUnit, startMain } from './wiring.js';

/** The delay before the next restart, or undefined when there were too many crashes (the pipeline is then stopped). */
async function noteCrash(ctx: Context, name: string): Promise<number | undefined> {
  const now = Date.now();
  ctx.crashes = ctx.crashes.filter((t) => now - t < ctx.crashWindowMs);
  ctx.crashes.push(now);
  const stats = ctx.stats.get(name);
  if (stats) stats.restarts++;
  if (ctx.crashes.length > ctx.maxCrashes) {
    ctx.log(`cqp: ${ctx.crashes.length} crashes within ${Math.round(ctx.crashWindowMs / 1000)} s (last: ${name}); stopping the pipeline`);
    killAll(ctx, 1);
    return undefined;
  }
  return backoffMs(ctx.crashes.length - 1);
}

/**
 * A process between the source and the sinks died: what it held is gone, and so is everything
 * upstream of it in flight. Stop the upstream at once, let the downstream drain into the sinks, then
 * start again from the positions the exactly-once sinks hold (they skip what they already have;
 * at-least-once sinks may see some events again).
 */
export async function recoverMain(ctx: Context, crashed: StageProcess, unit: SinkUnit | undefined): Promise<void> {
  if (!ctx.lifecycle.enter('recovering')) return;
  const chain = ctx.chain();
  // A stage a reload replaced may have taken a kept neighbour with it (its output closed, it exited
  // 0): the chain is then broken at the first process that is gone, and is recovered from there.
  const at = chain.findIndex((n) => n.proc === crashed || (!unit && !n.proc.running));
  const current = unit ? ctx.units.get(unit.plan.name) === unit : at >= 0;
  if (!current) {
    ctx.lifecycle.enter('running');
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
    for (const other of ctx.units.values()) {
      if (other === unit || readsLog(other)) continue;
      const feed = other.where ?? other.sink;
      feed.expected ??= 'end';
      feed.stdin.end();
    }
  }
  await ctx.exited(ctx.mainProcs());
  for (const [name, other] of [...ctx.units]) if (!readsLog(other)) ctx.units.delete(name);
  const delay = await noteCrash(ctx, crashed.name);
  if (delay === undefined) return;
  if (!ctx.plan.source.resumable) {
    ctx.log(`cqp: the ${ctx.plan.source.type} source cannot replay: up to ${inFlight} events in flight may be lost`);
  }
  await sleep(delay);
  if (ctx.state === 'stopping') return;
  await startMain(ctx, await resumeFor(ctx, ctx.source?.link.positions));
  ctx.lifecycle.enter('running');
}

/** A sink reading the log died: restart it; it resumes from what it holds. */
export async function recoverUnit(ctx: Context, unit: SinkUnit): Promise<void> {
  if (ctx.state !== 'running' || ctx.units.get(unit.plan.name) !== unit) return;
  for (const proc of ctx.unitProcs(unit)) proc.stop('SIGKILL');
  await ctx.exited(ctx.unitProcs(unit));
  const delay = await noteCrash(ctx, unit.plan.name);
  if (delay === undefined) return;
  await sleep(delay);
  if (ctx.state !== 'running') return;
  ctx.units.set(unit.plan.name, await spawnUnit(ctx, unit.plan));
}

/**
 * Where the source resumes: the smallest position its exactly-once sinks hold; without such sinks,
 * after the last event the supervisor forwarded (`forwarded`).
 */
export async function resumeFor(ctx: Context, forwarded: PositionMap | undefined): Promise<PositionMap | undefined> {
  const durable = await resumePositions(ctx.plan.sinks);
  if (durable !== undefined) return durable;
  if (forwarded && Object.keys(forwarded).length > 0) {
    ctx.log('cqp: no exactly-once sink holds positions; resuming after the last event forwarded (events in flight may be lost)');
    return { ...forwarded };
  }
  return undefined;
}
