/**
 * `cqp replay`: the command log takes the place of a pipeline's source, and the same
 * supervisor that runs `cqp run` runs the pipeline's stages and sinks until the log (up to `--until`)
 * is drained. Sinks that write files are rebuilt blue/green (`blue-green.ts`); sinks that publish
 * outside cqp are skipped unless asked for.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type { StoreSwap } from '../core/component.js';
import { CqpError, messageOf, reportError } from '../core/errors.js';
import { kebab } from '../core/options.js';
import { parsePath } from '../core/paths.js';
import { findComponent } from '../core/registry.js';
import { parseLogBounds, type LogPos } from '../log/format.js';
import { checkBoundsOnLog } from '../log/input.js';
import type { WriterLock } from '../log/lock.js';
import { isLocationUrl, openCommandLog, resolveLogLocation, type CommandLog } from '../log/command-log.js';
import { clearLeftovers, commitTemp, completeTemp, discardTemp, lockTarget, prepareTemp, tempPathFor, type BlueGreenFile } from './blue-green.js';
import { openPipeline } from './config.js';
import { cliCommand, type Command, type PipelinePlan, type SinkPlan, type StagePlan } from './plan.js';
import { readLogEnd, sinkEnds, type SinkEnd } from './sink-ends.js';
import { describeReplay, eventsRead, progressText, replaySummary } from './replay-report.js';
import { runHere, sinkToRunHere, supervised } from './replay-here.js';

/** What `cqp replay` was asked to do. */
export interface ReplayOptions {
  /** The command log to read (relative to the current folder). */
  log: string;
  /** The pipeline whose stages and sinks the log runs through. */
  pipeline: string;
  from?: string | undefined;
  until?: string | undefined;
  /** A dot path to a time inside each event: ISO-8601 bounds then apply to it, not to the append time. */
  timeField?: string | undefined;
  dryRun?: boolean | undefined;
  withExternalSinks?: boolean | undefined;
  /** Milliseconds between progress lines when stderr is not a terminal (default 10 s). */
  statusIntervalMs?: number | undefined;
}

/** A record's place in the log. */
export interface LogPoint {
  seq: number;
  /** Append time, ms since the epoch. */
  time: number;
}

/** The records of a log between two positions: the first, the last and how many (none: `count` 0). */
export interface LogRange {
  first: LogPoint | undefined;
  last: LogPoint | undefined;
  count: number;
}

/** What replay does with one sink of the pipeline. */
export interface SinkDecision {
  plan: SinkPlan;
  action: 'replace' | 'write' | 'skip';
  /** For `replace` of a file: the new file and its target. */
  file: BlueGreenFile | undefined;
  /** For `replace` of a store that swaps itself in (a database schema), as its definition builds it. */
  swap?: StoreSwap | undefined;
}

/** A replay worked out: the range of the log, the pipeline the supervisor runs, and each sink's fate. */
export interface ReplayPlan {
  log: string;
  /** The log, opened once for the plan and for the check at the end; `replayCommand` closes it. */
  source: CommandLog;
  pipeline: PipelinePlan;
  range: LogRange;
  /** The time filter on the events' own time (`--time-field` with an ISO-8601 bound). */
  timeFilter: { path: string; from: number | undefined; until: number | undefined } | undefined;
  sinks: SinkDecision[];
  /** The pipeline as the supervisor runs it: the log as its source, sinks pointed at their new files. */
  run: PipelinePlan;
}

async function firstRecord(log: CommandLog, from: LogPos | undefined, until?: LogPos): Promise<LogPoint | undefined> {
  for await (const batch of log.read({ from, until })) {
    const r = batch[0];
    if (r) return { seq: r.seq, time: r.time };
  }
  return undefined;
}

/** The records from `from` to `until` (inclusive; append time or seq), found through the log's index. */
export async function logRange(log: CommandLog, from: LogPos | undefined, until: LogPos | undefined): Promise<LogRange> {
  const none: LogRange = { first: undefined, last: undefined, count: 0 };
  const tail = await log.tail();
  if (tail.lastSeq === 0) return none;
  const first = await firstRecord(log, from, until);
  if (!first) return none;
  let last: LogPoint | undefined = { seq: tail.lastSeq, time: tail.lastTime };
  if (until && ('seq' in until ? until.seq < tail.lastSeq : until.time < tail.lastTime)) {
    // The last record at or before the bound: just before the first one after it.
    const after = 'seq' in until ? until.seq + 1 : ((await firstRecord(log, { time: until.time + 1 }))?.seq ?? tail.lastSeq + 1);
    last = after - 1 >= first.seq ? await firstRecord(log, { seq: after - 1 }, { seq: after - 1 }) : undefined;
  }
  if (!last || last.seq < first.seq) return none;
  return { first, last, count: last.seq - first.seq + 1 };
}

function sameFile(a: string, b: string): boolean {
  if (isLocationUrl(a) || isLocationUrl(b)) return a === b;
  const real = (p: string): string => {
    try {
      return realpathSync.native(p);
    } catch {
      return resolve(p);
    }
  };
  return real(a) === real(b);
}

/** The sink's command with its file option pointed at `temp` instead of `target`. */
function retarget(command: Command, option: string, target: string, temp: string): Command {
  const flag = `--${kebab(option)}`;
  const args = [...command.args];
  const at = args.findIndex((a, i) => a === flag && args[i + 1] === target);
  if (at >= 0) args[at + 1] = temp;
  else {
    const inline = args.indexOf(`${flag}=${target}`);
    if (inline < 0) throw new CqpError('CONFIG', `cannot point ${flag} of this sink at a new file (its command is ${args.join(' ')})`);
    args[inline] = `${flag}=${temp}`;
  }
  return { ...command, args };
}

/** The sink's command with option `option` set to `value`: the flag's value replaced, or the flag added. */
function withOption(command: Command, option: string, value: string): Command {
  const flag = `--${kebab(option)}`;
  const args = [...command.args];
  const at = args.indexOf(flag);
  if (at >= 0 && at + 1 < args.length) args[at + 1] = value;
  else {
    const inline = args.findIndex((a) => a.startsWith(`${flag}=`));
    if (inline >= 0) args[inline] = `${flag}=${value}`;
    else args.push(flag, value);
  }
  return { ...command, args };
}

/**
 * The hidden stage behind `--time-field`: a `where` over the event's own time. The path becomes
 * quoted property reads, so no segment is ever read as code.
 */
function timeFilterStage(path: string, from: number | undefined, until: number | undefined, taken: Set<string>): StagePlan {
  const read = `e${parsePath(path)
    .map((s) => `?.[${JSON.stringify(s)}]`)
    .join('')}`;
  const checks = [...(from === undefined ? [] : [`ms >= ${from}`]), ...(until === undefined ? [] : [`ms <= ${until}`])];
  const expr = `((t) => { const ms = typeof t === 'number' ? t : typeof t === 'string' ? Date.parse(t) : NaN; return ${checks.join(' && ')}; })(${read})`;
  let name = 'time-field';
  for (let i = 2; taken.has(name); i++) name = `time-field-${i}`;
  return { name, filter: 'where', options: { expr }, command: cliCommand(['filter', 'where', '--expr', expr]) };
}

/** Works out a replay: reads the pipeline and the log's range; starts nothing and writes nothing. */
export async function planReplay(options: ReplayOptions): Promise<ReplayPlan> {
  const log = resolveLogLocation(options.log);
  const pipeline = await openPipeline(options.pipeline);
  const { from, until } = parseLogBounds(options.from, options.until);
  if (options.timeField !== undefined) {
    try {
      parsePath(options.timeField);
    } catch (error) {
      throw new CqpError('USAGE', `--time-field: ${messageOf(error)}`);
    }
  }
  // With --time-field an ISO-8601 bound is about the events' own times, which need not grow with the
  // log: the whole stretch is read and a filter keeps the events inside the bounds.
  const onEventTime = (p: LogPos | undefined): p is { time: number } => options.timeField !== undefined && p !== undefined && 'time' in p;
  const timeFilter =
    options.timeField !== undefined && (onEventTime(from) || onEventTime(until))
      ? { path: options.timeField, from: onEventTime(from) ? from.time : undefined, until: onEventTime(until) ? until.time : undefined }
      : undefined;
  const source = await openCommandLog(log);
  try {
    return await planOn(source, { log, pipeline, options, from, until, timeFilter, onEventTime });
  } catch (error) {
    await source.close();
    throw error;
  }
}

/** What `planReplay` has worked out before it reads the log. */
interface PlanStart {
  log: string;
  pipeline: PipelinePlan;
  options: ReplayOptions;
  from: LogPos | undefined;
  until: LogPos | undefined;
  timeFilter: ReplayPlan['timeFilter'];
  onEventTime: (p: LogPos | undefined) => p is { time: number };
}

/** The rest of a replay's plan, on the log opened for it. */
async function planOn(source: CommandLog, { log, pipeline, options, from, until, timeFilter, onEventTime }: PlanStart): Promise<ReplayPlan> {
  let range: LogRange;
  // A time bound on the events' own time cannot be compared with a sequence number.
  if (options.timeField === undefined) await checkBoundsOnLog(source, options);
  try {
    range = await logRange(source, onEventTime(from) ? undefined : from, onEventTime(until) ? undefined : until);
  } catch (error) {
    throw new CqpError(error instanceof CqpError ? error.code : 'IO', `--log: ${messageOf(error)}`, { cause: error });
  }

  const sinks: SinkDecision[] = [];
  for (const plan of pipeline.sinks) sinks.push(await decide(plan));
  async function decide(plan: SinkPlan): Promise<SinkDecision> {
    const def = findComponent('sink', plan.type);
    if (def?.external === true && !options.withExternalSinks) return { plan, action: 'skip', file: undefined };
    const store = def?.store;
    const target = plan.store;
    if (store === undefined || target === undefined) return { plan, action: 'write', file: undefined };
    if (sameFile(target, log)) {
      throw new CqpError(
        'CONFIG',
        `${pipeline.file}: sink ${plan.name} writes the log being replayed (${target}); a replay cannot rebuild its own input — give that sink another path, or remove it`,
      );
    }
    if (store.rebuild === undefined) return { plan, action: 'write', file: undefined };
    // A store that swaps a whole build in itself (a server's schema) is asked to; another on a server (a
    // URL) is not a file to build beside and rename: it is written in place.
    if (store.rebuild.swap) return { plan, action: 'replace', file: undefined, swap: await store.rebuild.swap(plan.options) };
    if (isLocationUrl(target)) return { plan, action: 'write', file: undefined };
    const file: BlueGreenFile = { sink: plan.name, target, temp: tempPathFor(target), option: store.option, locked: store.locked === true, rebuild: store.rebuild };
    return { plan, action: 'replace', file };
  }

  const targets = new Map<string, string>();
  for (const d of sinks) {
    const target = d.file?.target ?? d.swap?.target;
    if (target === undefined) continue;
    const other = targets.get(target);
    if (other) throw new CqpError('CONFIG', `${pipeline.file}: sinks ${other} and ${d.plan.name} both write ${target}; give each its own ${d.file ? 'file' : 'place'}`);
    targets.set(target, d.plan.name);
  }
  // An empty range still runs the sinks (they build empty views); no record is appended at the epoch.
  const seqArgs = range.first && range.last ? ['--from', String(range.first.seq), '--until', String(range.last.seq)] : ['--until', '1970-01-01T00:00:00Z'];
  const taken = new Set([pipeline.source.name, ...pipeline.stages.map((s) => s.name), ...pipeline.sinks.map((s) => s.name)]);
  const stages = [...(timeFilter ? [timeFilterStage(timeFilter.path, timeFilter.from, timeFilter.until, taken)] : []), ...pipeline.stages];
  // Without stages between the log and the sinks, each sink reads the log itself (no source process,
  // no pipe, no stamps); a sink with where: still needs its filter in front, so then all are fed.
  const written = sinks.filter((d) => d.action !== 'skip');
  const direct = stages.length === 0 && written.length > 0 && written.every((d) => d.plan.where === undefined);
  const run: PipelinePlan = {
    ...pipeline,
    source: {
      name: pipeline.source.name,
      type: 'log',
      options: { path: log, follow: false },
      resumable: true,
      readsStdin: false,
      command: cliCommand(['source', 'log', '--path', log, ...seqArgs]),
    },
    stages,
    sinks: written.map(({ plan, file, swap }) => {
      // A sqlite sink does not follow a log sink being rebuilt: it reads the replayed log, or the stages.
      const fed: SinkPlan = { ...plan, logInput: direct ? { path: log, follow: false, args: ['--read-log', log, ...seqArgs] } : undefined };
      if (swap) return { ...fed, options: { ...plan.options, [swap.option]: swap.value }, command: withOption(plan.command, swap.option, swap.value) };
      if (!file) return fed;
      const command = retarget(plan.command, file.option, file.target, file.temp);
      const building = file.rebuild.building;
      if (building === undefined) return { ...fed, options: { ...plan.options, [file.option]: file.temp }, store: file.temp, command };
      return {
        ...fed,
        options: { ...plan.options, [file.option]: file.temp, [building]: true },
        store: file.temp,
        command: { ...command, args: [...command.args, `--${kebab(building)}`] },
      };
    }),
  };
  return { log, source, pipeline, range, timeFilter, sinks, run };
}

/**
 * Where each exactly-once sink ended, beside the last seq replayed (read from the new files before
 * they replace the old): a sink that read the log itself and holds less was cut short, and the replay
 * fails rather than swap in views that stop early.
 */
async function replayEnds(plan: ReplayPlan): Promise<SinkEnd[]> {
  const end = await readLogEnd(plan.source);
  if (!end) return [];
  return sinkEnds(plan.run.sinks, { end: { key: end.key, seq: plan.range.last?.seq ?? 0 } });
}

/** `cqp replay`: runs the log through the pipeline into its sinks; resolves with the exit code. */
export async function replayCommand(options: ReplayOptions): Promise<number> {
  let plan: ReplayPlan;
  try {
    plan = await planReplay(options);
  } catch (error) {
    return reportError(error);
  }
  try {
    return await runPlan(plan, options);
  } finally {
    await plan.source.close();
  }
}

/** Runs a replay worked out by `planReplay`, or describes it (`--dry-run`). */
async function runPlan(plan: ReplayPlan, options: ReplayOptions): Promise<number> {
  if (options.dryRun) {
    process.stdout.write(`${describeReplay(plan)}\n`);
    return 0;
  }

  const files = plan.sinks.flatMap((d) => (d.file ? [d.file] : []));
  const swaps = plan.sinks.flatMap((d) => (d.swap ? [d.swap] : []));
  const locks: WriterLock[] = [];
  const releaseSwaps = async (): Promise<void> => {
    for (const s of swaps) await s.release().catch(() => undefined);
  };
  const tty = process.stderr.isTTY === true;
  let barShown = false;
  const clearBar = (): void => {
    if (barShown) process.stderr.write('\r\x1b[K');
    barShown = false;
  };
  const log = (line: string): void => {
    clearBar();
    process.stderr.write(`${line}\n`);
  };
  try {
    for (const f of files) {
      for (const removed of clearLeftovers(f.target)) log(`cqp: removed ${removed}, left by an interrupted replay`);
      const lock = lockTarget(f);
      if (lock) locks.push(lock);
      prepareTemp(f);
    }
    for (const s of swaps) {
      // The target's lock first: a live writer is refused before anything is dropped.
      await s.lock();
      for (const removed of await s.clearLeftovers()) log(`cqp: removed ${removed}, left by an interrupted replay`);
    }
  } catch (error) {
    for (const lock of locks) lock.release();
    await releaseSwaps();
    return reportError(error);
  }

  const startedAt = Date.now();
  const here = sinkToRunHere(plan.run);
  const running = here ? runHere(here, plan.run.dir, log) : await supervised(plan.run, log);
  const total = plan.range.count;
  const ticker = setInterval(
    () => {
      const text = progressText(eventsRead(running.components()), total, Date.now() - startedAt, tty ? 30 : 0);
      if (tty) {
        process.stderr.write(`\r\x1b[K${text}`);
        barShown = true;
      } else {
        process.stderr.write(`cqp replay: ${text}\n`);
      }
    },
    tty ? 200 : (options.statusIntervalMs ?? 10_000),
  );
  ticker.unref();

  let code: number;
  let ends: SinkEnd[] = [];
  try {
    code = await running.run(async (result) => {
      if (result === 0 && !running.interrupted()) {
        ends = await replayEnds(plan);
        for (const e of ends.filter((x) => x.short)) log(`cqp: ${e.name} stopped ${e.text} of the stretch replayed`);
        if (ends.some((e) => e.short)) result = 1;
      }
      if (result === 0 && !running.interrupted()) {
        for (const f of files) await completeTemp(f);
        for (const f of files) commitTemp(f);
        for (const s of swaps) await s.commit();
      }
      return result;
    });
  } finally {
    clearInterval(ticker);
    clearBar();
  }
  const interrupted = running.interrupted();
  if (code !== 0 || interrupted) {
    for (const f of files) discardTemp(f);
    for (const s of swaps) await s.discard().catch(() => undefined);
    for (const lock of locks) lock.release();
    await releaseSwaps();
    const kept = [...files.map((f) => f.target), ...swaps.map((s) => s.target)];
    process.stderr.write(`cqp replay: ${interrupted ? 'interrupted' : 'failed'}; ${kept.length > 0 ? `${kept.join(', ')} unchanged` : 'nothing was replaced'}\n`);
    return code === 0 ? 1 : code;
  }
  for (const lock of locks) lock.release();
  await releaseSwaps();
  process.stderr.write(`${replaySummary(plan, running.components(), Date.now() - startedAt, ends)}\n`);
  return 0;
}
