/**
 * What a process's exit means: an expected end (a drain, a swap, a stop), a bounded read that is done,
 * a component that refused its configuration or was locked out (the run stops), or a crash (recovery).
 */
import { CqpError, messageOf } from '../core/errors.js';
import type { Context, SinkUnit } from './context.js';
import { readsLog } from './context.js';
import { isConfigurationExit } from './failures.js';
import type { ExitStatus, StageProcess } from './process.js';
import { recoverMain, recoverUnit } from './recovery.js';
import { refusalOf } from './refusals.js';
import { endIfReadersDone, stop } from './shutdown.js';

/** Acts on the exit of `proc` (of `unit` when it is a sink or its where-filter), whenever it comes. */
export function watch(ctx: Context, proc: StageProcess, unit?: SinkUnit): void {
  // Ready, or ended cleanly: whatever an earlier process of the component did has been made up for.
  void proc.ready?.then((ok) => ok && ctx.failures.recovered(proc.name));
  void proc.exit.then((status) => {
    // No process of it runs (until a restart): it is not silent, it is gone.
    const stats = ctx.stats.get(proc.name);
    if (stats && stats.pid === proc.pid) stats.heardAt = undefined;
    const how = status.error ? messageOf(status.error) : status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    if (status.code === 0) ctx.failures.recovered(proc.name);
    else if (proc.expected !== 'kill' && !(proc.expected === 'stop' && status.signal === 'SIGTERM')) ctx.failures.crashed(proc.name, proc.describeExit(status));
    // Also while the pipeline stops: a view told where the log ends may only then find its views file bad.
    if (proc.expected !== 'kill' && isConfigurationExit(proc, status, ctx.graceMs)) {
      refusedConfiguration(ctx, proc, status);
      return;
    }
    if (proc.expected) {
      const stopped = proc.expected === 'stop' && status.signal === 'SIGTERM';
      if (proc.expected !== 'kill' && status.code !== 0 && !stopped) {
        ctx.log(`cqp: ${proc.name} exited with ${how} while stopping`);
        if (ctx.state === 'stopping') ctx.failed = true;
      }
      return;
    }
    if (unit && proc === unit.sink && unit.plan.logInput?.follow === false && status.code === 0) {
      // A bounded log read (a replay) has reached its end.
      proc.expected = 'end';
      unit.ended = true;
      endIfReadersDone(ctx);
      return;
    }
    if (unit && proc === unit.sink && proc.outputClosed && status.code === 0 && ctx.state === 'running') {
      // Its stdout (the supervisor's own) was closed, as by `| head -1`: nothing more can go there.
      proc.expected = 'end';
      ctx.log(`cqp: ${proc.name}: stdout was closed; stopping the pipeline`);
      void stop(ctx);
      return;
    }
    if (proc.outputClosed && status.code === 0) {
      // What it wrote into has exited (or is exiting): that process's own exit says what happened (a
      // sink whose stdout was closed, a crash) and what to do; this one is not restarted on its account.
      proc.expected = 'end';
      return;
    }
    proc.expected = 'kill';
    if (ctx.state === 'stopping' || ctx.state === 'done') {
      // Exit 0 while the pipeline stops is a drain (or an output closed under it, as by `| head -1`).
      if (status.code === 0) return;
      ctx.log(`cqp: ${proc.name} exited with ${how} while stopping`);
      ctx.failed = true;
      return;
    }
    if (proc === ctx.source?.proc && status.code === 0) {
      ctx.log(`cqp: the source has ended; draining`);
      void stop(ctx);
      return;
    }
    const refused = refusalOf(proc, status);
    // Queued: a refusal while the pipeline starts stops it once the start is done.
    if (refused) {
      void ctx.serial(async () => stopFor(ctx, proc, new CqpError('LOCKED', refused)));
      return;
    }
    ctx.log(`cqp: ${proc.name} exited unexpectedly (${how}); restarting it`);
    void ctx.serial(() => (unit && readsLog(unit) ? recoverUnit(ctx, unit) : recoverMain(ctx, proc, unit)));
  });
}

/** A component refused its configuration at start: restarting cannot help, so the run stops (exit 2). */
function refusedConfiguration(ctx: Context, proc: StageProcess, status: ExitStatus): void {
  proc.expected = 'kill';
  const message = proc.describeExit(status);
  ctx.failures.refusedConfiguration(proc.name, message);
  const why = status.error || proc.lastStderr === undefined ? message : `exit ${status.code}; its message is above`;
  ctx.log(`cqp: ${proc.name}: configuration error at start (${why}); a new process would fail the same way, so the pipeline stops (exit 2)`);
  void stop(ctx);
}

/** A stage whose output cannot go on: it is killed, what it wrote before drains, and the run ends with exit 1. */
export function stopFor(ctx: Context, proc: StageProcess, error: CqpError): void {
  ctx.failures.stopped(proc.name, messageOf(error));
  ctx.log(`cqp: ${messageOf(error)}`);
  proc.stop('SIGKILL');
  void stop(ctx);
}
