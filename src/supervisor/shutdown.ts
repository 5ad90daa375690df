/**
 * Shutdown: stop the source, let every stage and sink drain, let the views following the log read to
 * its end, then end the run. A drain limit (`--drain-timeout`) kills what makes no progress.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { messageOf } from '../core/errors.js';
import { compareN } from '../core/position.js';
import type { Context, SinkUnit } from './context.js';
import type { StageProcess } from './process.js';
import { lockedOut } from './refusals.js';
import { readLogEnd, sinkEnds, type LogEnd } from './sink-ends.js';
import { stalledFor } from './status.js';
import { spawnUnit } from './wiring.js';

/** How long a view may read nothing new, short of the log's end, before shutdown stops it anyway (ms). */
const FOLLOWER_STALL_MS = 30_000;

/** Stops the source, lets every stage and sink drain, then resolves `result` (SIGINT/SIGTERM, or the source ended). */
export function stop(ctx: Context): Promise<void> {
  if (ctx.state === 'stopping' || ctx.state === 'done') return Promise.resolve();
  ctx.lifecycle.enter('stopping');
  const limit = ctx.options.drainTimeoutMs;
  if (limit !== undefined) watchDrain(ctx, limit);
  return ctx.serial(async () => {
    ctx.source?.proc.stop('SIGTERM');
    await ctx.exited(ctx.mainProcs());
    await stopFollowers(ctx);
    finish(ctx, ctx.failed ? 1 : 0);
  });
}

/** Without stages to wait for, the pipeline ends once every sink reading a bounded stretch of the log has. */
export function endIfReadersDone(ctx: Context): void {
  if (ctx.state !== 'running' || ctx.fedByStages()) return;
  if ([...ctx.units.values()].every((u) => u.ended)) void stop(ctx);
}

/**
 * Stops the sinks following the log once they hold its last record. The log sink has exited and
 * flushed by now, so the log's end is read from the file; each view is told it and stops by itself
 * once it has read that far and written what it read. What it then holds is read back from its
 * database: a view short of the end (it crashed, or read nothing new for FOLLOWER_STALL_MS) is named
 * and fails the run, since a run that says it succeeded must not leave a view behind its log.
 */
async function stopFollowers(ctx: Context): Promise<void> {
  // A view that refused its configuration has nothing to read to: it is named among the failures.
  const followers = [...ctx.units.values()].filter((u) => u.plan.logInput?.follow && !ctx.failures.isMisconfigured(u.plan.name));
  if (followers.length === 0) return;
  let end: LogEnd | undefined;
  try {
    end = await readLogEnd(followers[0]?.plan.logInput?.path as string);
  } catch (error) {
    ctx.log(`cqp: cannot read the log's end (${messageOf(error)}); stopping the views where they are`);
    ctx.failed = true;
  }
  const target = end && end.seq > 0 ? end : undefined;
  await Promise.all(followers.map((unit) => stopFollower(ctx, unit, target)));
  if (!target) return;
  for (const sinkEnd of await sinkEnds(followers.map((u) => u.plan), { end: target })) {
    if (!sinkEnd.short || ctx.failures.isMisconfigured(sinkEnd.name)) continue;
    ctx.log(`cqp: ${sinkEnd.name} stopped ${sinkEnd.text} of the log; it resumes from there on the next run`);
    ctx.failed = true;
  }
}

/** Lets one view read to `target` and stop; one that died before shutdown is started again to get there. */
async function stopFollower(ctx: Context, unit: SinkUnit, target: LogEnd | undefined): Promise<void> {
  if (target && !unit.sink.running && unit.sink.expected === 'kill' && !lockedOut(unit.sink) && ctx.units.get(unit.plan.name) === unit) {
    ctx.log(`cqp: ${unit.plan.name} is not running; starting it again to read to the log's end`);
    unit = await spawnUnit(ctx, unit.plan);
    ctx.units.set(unit.plan.name, unit);
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
        ctx.log(`cqp: ${unit.plan.name} has not read further for ${FOLLOWER_STALL_MS / 1000} s (at ${reached ?? 'nothing'} of ${target.seq}); stopping it there`);
        break;
      }
      await sleep(20);
    }
  }
  // It stops reading and writes what it has read.
  unit.sink.stop('SIGTERM');
  await ctx.exited(ctx.unitProcs(unit));
}

/**
 * The drain's limit counts time without progress, not time: a view catching up on a long log at
 * shutdown moves its counts and is waited for; a stage that holds the drain (stopped, hung) is not.
 */
function watchDrain(ctx: Context, limit: number): void {
  const moved = (): number => ctx.components().reduce((sum, c) => sum + c.in + c.out, 0);
  let last = moved();
  let since = Date.now();
  ctx.drainLimit = setInterval(() => {
    const now = moved();
    if (now !== last) [last, since] = [now, Date.now()];
    else if (Date.now() - since >= limit) drainTimedOut(ctx, limit);
  }, Math.min(1000, limit / 4));
  ctx.drainLimit.unref();
}

/**
 * The drain took longer than its limit: names what holds it (a stage that stopped reporting, or else
 * the first one still running in pipeline order, which the rest wait for), kills what is left, exit 1.
 */
function drainTimedOut(ctx: Context, limit: number): void {
  clearInterval(ctx.drainLimit);
  if (ctx.state === 'done') return;
  const left = ctx.allProcs().filter((p) => p.running);
  const label = (p: StageProcess): string => `${p.name} (pid ${p.pid ?? '?'})`;
  const silent = (p: StageProcess): number | undefined => {
    const stats = ctx.stats.get(p.name);
    return stats && stats.pid === p.pid ? stalledFor(stats) : undefined;
  };
  const holder = left.find((p) => silent(p) !== undefined) ?? left[0];
  if (holder) {
    const quiet = silent(holder);
    const why = quiet === undefined ? 'still running' : `stalled, no report for ${quiet} s`;
    const rest = left.filter((p) => p !== holder).map(label);
    ctx.log(`cqp: the drain made no progress for ${limit / 1000} s: ${label(holder)} holds it (${why}); killing ${rest.length > 0 ? `it and ${rest.join(', ')}` : 'it'} (a larger --drain-timeout waits longer)`);
  } else {
    ctx.log(`cqp: the drain made no progress for ${limit / 1000} s; stopping`);
  }
  ctx.failed = true;
  killAll(ctx, 1);
}

/** Kills every process at once (a second signal, or too many crashes). */
export function killAll(ctx: Context, code = 1): void {
  ctx.lifecycle.enter('stopping');
  for (const proc of ctx.allProcs()) proc.stop('SIGKILL');
  void ctx.exited(ctx.allProcs()).then(() => finish(ctx, code));
}

function finish(ctx: Context, code: number): void {
  if (ctx.state === 'done') return;
  clearInterval(ctx.drainLimit);
  ctx.lifecycle.enter('done');
  ctx.resolveResult(ctx.failures.exitCode(code));
}
