import { releaseStopSignals } from '../core/early-stop.js';
import { CqpError, messageOf, reportError } from '../core/errors.js';
import { lintPipeline, openPipeline, readPipelineFile } from './config.js';
import type { PipelinePlan } from './plan.js';
import { FileWatch } from './file-watch.js';
import { parseHostPort, serveMetrics } from './metrics.js';
import { watchParent } from './orphan.js';
import { readComponentFiles } from './read-files.js';
import { consistentCounts, Rates, renderTable, statusLine, statusMode, summary, upstreams } from './status.js';
import { nothingNewNote } from './nothing-new.js';
import { supervise } from './supervise.js';
import { Supervisor } from './supervisor.js';

/** One line saying what a valid pipeline holds. */
export function describePlan(plan: PipelinePlan): string {
  const sinks = plan.sinks.map((s) => `${s.name} (${s.type}${s.logInput ? ', follows the log' : ''}${s.where ? ', where' : ''})`);
  return `${plan.name}: source ${plan.source.type}, ${plan.stages.length} stage${plan.stages.length === 1 ? '' : 's'}${plan.stages.length ? ` (${plan.stages.map((s) => s.name).join(' → ')})` : ''}, sinks ${sinks.join(', ')}`;
}

/** `cqp lint FILE`: 0 with a one-line summary, or 2 with every problem found. */
export async function lintCommand(file: string): Promise<number> {
  try {
    const plan = await lintPipeline(readPipelineFile(file), file);
    process.stdout.write(`${file}: OK — ${describePlan(plan)}\n`);
    return 0;
  } catch (error) {
    // Problems in the file are printed as they are, one `FILE:LINE: field: message` a line (as a compiler does).
    if (error instanceof CqpError && error.code === 'CONFIG') {
      process.stderr.write(`${error.message}\n`);
      return 2;
    }
    return reportError(error);
  }
}

/** `cqp run FILE`: runs the pipeline until its source ends or a signal stops it; resolves with the exit code. */
export async function runPipelineCommand(file: string, opts: { metrics?: string; statusIntervalMs?: number; drainTimeoutMs?: number } = {}): Promise<number> {
  let plan: PipelinePlan;
  try {
    plan = await openPipeline(file);
  } catch (error) {
    return reportError(error);
  }
  // What the files the components read hold as they start; one that is not valid, its component reports.
  await readComponentFiles(plan);
  const mode = statusMode(process.stdout.fd, process.stderr.fd);
  let drawn = 0;
  const clearTable = (): void => {
    if (drawn > 0) process.stderr.write(`\x1b[${drawn}F\x1b[J`);
    drawn = 0;
  };
  const log = (line: string): void => {
    clearTable();
    process.stderr.write(`${line}\n`);
  };
  const supervisor = new Supervisor(plan, { log, drainTimeoutMs: opts.drainTimeoutMs });

  let metrics: Awaited<ReturnType<typeof serveMetrics>> | undefined;
  if (opts.metrics) {
    try {
      const { host, port } = parseHostPort(opts.metrics);
      metrics = await serveMetrics(supervisor, host, port);
      log(`cqp: metrics on http://${metrics.address}/metrics and /status`);
    } catch (error) {
      return reportError(error);
    }
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      log(`cqp: ${signal}: stopping the source and draining the pipeline (again to kill it)`);
      void supervisor.stop();
    } else {
      log(`cqp: ${signal} again: killing every stage`);
      supervisor.killAll(1);
    }
  };
  // A parent that died (a killed `npx` wrapper) passes no signal on: stop as on SIGTERM, unless a stop
  // is under way already (Ctrl-C under npx reaches the supervisor, then npm's shell dies of it).
  const unwatchParent = watchParent((parent) => {
    if (signals > 0) return;
    signals++;
    log(`cqp: the parent process (pid ${parent}) has exited: stopping the source and draining the pipeline`);
    void supervisor.stop();
  });
  // After each reload the files to watch are those of the pipeline now running, and of one just refused.
  const files = new FileWatch(() => void reload());
  const reload = async (): Promise<void> => {
    await supervisor.requestReload();
    files.set(supervisor.watchedFiles());
  };
  const onHup = (): void => void reload();
  files.set(supervisor.watchedFiles());

  const rates = new Rates();
  const interval = mode === 'table' ? 1000 : opts.statusIntervalMs ?? 10_000;
  const ticker = mode === 'none' ? undefined : setInterval(() => {
    const components = consistentCounts(supervisor.components(), upstreams(supervisor.plan));
    rates.sample(components);
    if (mode === 'table') {
      clearTable();
      const table = renderTable(components, rates, supervisor.reloads, supervisor.worker());
      process.stderr.write(`${table}\n`);
      drawn = table.split('\n').length;
    } else {
      process.stderr.write(`${statusLine(components, rates, supervisor.reloads, supervisor.worker())}\n`);
    }
  }, interval);
  ticker?.unref();

  let code: number;
  // A stop asked for while the pipeline was being read is carried out once it has started.
  const early = await releaseStopSignals();
  try {
    code = await supervise(supervisor, { SIGINT: onSignal, SIGTERM: onSignal, SIGHUP: onHup }, async () => {
      await supervisor.start();
      log(`cqp: running ${describePlan(supervisor.plan)}`);
      if (early !== undefined) onSignal(early);
      return supervisor.result;
    });
  } finally {
    clearInterval(ticker);
    files.close();
    unwatchParent();
    supervisor.closeTaps();
    metrics?.server.close();
  }
  clearTable();
  const ms = Date.now() - supervisor.startedAt;
  const ends = await supervisor.sinkEnds().catch((error: unknown) => {
    process.stderr.write(`cqp: cannot read where the sinks ended: ${messageOf(error)}\n`);
    return [];
  });
  process.stderr.write(`${summary(supervisor.components(), ms, ends, supervisor.failureMessages())}\n`);
  const sourceOut = supervisor.components().find((c) => c.kind === 'source')?.out ?? 0;
  const note = code === 0 ? nothingNewNote(supervisor.resumedFrom, sourceOut, supervisor.plan.sinks) : undefined;
  if (note !== undefined) process.stderr.write(`${note}\n`);
  return code;
}
