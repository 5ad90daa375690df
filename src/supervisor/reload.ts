/**
 * Hot reload: the pipeline file and the files its components read (read-files.ts) are read again and
 * compared with the running plan by component name (diff.ts); new processes are started first, so a
 * definition that fails leaves the pipeline as it was, then the source, the stages (stage-swap.ts) and
 * the sinks are swapped between two lines.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { messageOf } from '../core/errors.js';
import { loadPipelineComponents, parsePipeline } from './config.js';
import type { PipelinePlan, SinkPlan, SourcePlan } from './plan.js';
import { changedFiles, contentKey, filesRead, readComponentFiles } from './read-files.js';
import { readsLog, type Context, type SinkUnit } from './context.js';
import { describeDiff, reloadDiff, type ReloadDiff } from './diff.js';
import { watch } from './exits.js';
import { laterPositions, resumePositions } from './positions.js';
import { startStages, swapStages, type FreshStage } from './stage-swap.js';
import { fanoutTargets, linkFrom, spawnProc, spawnUnit } from './wiring.js';

/** How long a pipeline file that does not parse must stay unchanged before a reload is refused (ms). */
const SETTLE_MS = 150;

/** Queues a reload of the pipeline file and the files it names; requests made while one waits are merged into it. */
export function requestReload(ctx: Context): Promise<void> {
  if (ctx.reloadQueued) return ctx.idle();
  ctx.reloadQueued = true;
  return ctx.serial(async () => {
    ctx.reloadQueued = false;
    if (ctx.state !== 'running') return;
    await reload(ctx);
  });
}

function refuse(ctx: Context, n: number, why: string): void {
  ctx.reloads.failed++;
  ctx.log(`cqp: reload #${n} refused: ${why}`);
}

/** The pipeline as it is on disk: its plan when it is valid, else why not. */
interface OnDisk {
  /** Identifies the content: the pipeline's text and what the files its components read hold. */
  key: string;
  /** The pipeline file and the files its components read (as far as they could be found). */
  files: string[];
  next?: PipelinePlan;
  problem?: string;
}

/** Reads the pipeline file and the files its components read; throws when the pipeline file cannot be read. */
async function readOnDisk(file: string): Promise<OnDisk> {
  const text = readFileSync(file, 'utf8');
  let next: PipelinePlan;
  try {
    await loadPipelineComponents(text);
    next = parsePipeline(text, file);
  } catch (error) {
    return { key: JSON.stringify([text]), files: [file], problem: messageOf(error) };
  }
  const problems = await readComponentFiles(next);
  const found = { key: contentKey(next), files: filesRead(next) };
  return problems.length > 0 ? { ...found, problem: problems.join('\n') } : { ...found, next };
}

async function reload(ctx: Context): Promise<void> {
  let disk: OnDisk;
  try {
    disk = await readOnDisk(ctx.plan.file);
  } catch (error) {
    refuse(ctx, ++ctx.reloadNo, `cannot read ${ctx.plan.file}: ${messageOf(error)}`);
    return;
  }
  // Editors save in steps and the watchers and the poll all fire: act once per content.
  const running = contentKey(ctx.plan);
  if (disk.key === running || disk.key === ctx.refused?.key) return;
  // A file that does not parse or validate may be half-saved: refuse it only once it has stopped changing.
  for (let look = 1; disk.problem !== undefined && look < 3; look++) {
    await sleep(SETTLE_MS);
    let again: OnDisk;
    try {
      again = await readOnDisk(ctx.plan.file);
    } catch {
      break;
    }
    if (again.key === disk.key) break;
    disk = again;
    if (disk.key === running) return;
  }
  const n = ++ctx.reloadNo;
  const { next } = disk;
  const refused = { key: disk.key, files: disk.files };
  if (next === undefined) {
    ctx.refused = refused;
    refuse(ctx, n, disk.problem ?? 'the pipeline is not valid');
    return;
  }
  ctx.refused = undefined;
  const diff = reloadDiff(ctx.plan, next);
  if (diff.empty) {
    ctx.plan = next;
    ctx.reloads.ok++;
    ctx.log(`cqp: reload #${n}: no changes`);
    return;
  }
  // Start the new processes first; if one fails, nothing has been touched yet.
  const fresh: FreshStage[] = [];
  const added: SinkUnit[] = [];
  try {
    if (diff.stages) startStages(ctx, diff.stages, next, fresh);
    for (const name of diff.sinks.added) added.push(await spawnUnit(ctx, next.sinks.find((s) => s.name === name) as SinkPlan, false));
    const procs = [...fresh.map((f) => f.proc), ...added.flatMap((u) => ctx.unitProcs(u))];
    await Promise.all(procs.map((p) => p.started(ctx.graceMs)));
  } catch (error) {
    for (const f of fresh) f.proc.stop('SIGKILL');
    for (const u of added) for (const p of ctx.unitProcs(u)) p.stop('SIGKILL');
    await ctx.exited([...fresh.map((f) => f.proc), ...added.flatMap((u) => ctx.unitProcs(u))]);
    restoreStats(ctx, fresh, diff);
    ctx.refused = refused;
    refuse(ctx, n, messageOf(error));
    return;
  }
  // Started and kept: from now on their exits are crashes.
  for (const f of fresh) watch(ctx, f.proc);
  for (const u of added) for (const p of ctx.unitProcs(u)) watch(ctx, p, u);
  const problems: string[] = [];
  if (diff.sourceChanged) await swapSource(ctx, next.source, problems);
  if (diff.stages) await swapStages(ctx, diff.stages, fresh, next);
  await swapSinks(ctx, diff, next, added, problems);
  for (const name of diff.removed) if (!next.stages.some((s) => s.name === name) && !next.sinks.some((s) => s.name === name) && next.source.name !== name) ctx.stats.delete(name);
  const edited = changedFiles(ctx.plan, next);
  ctx.plan = next;
  if (problems.length > 0) {
    // What was refused is tried again when something changes, not at the next save of the same content.
    ctx.refused = refused;
    ctx.reloads.failed++;
    ctx.log(`cqp: reload #${n} partly refused: ${problems.join('; ')}`);
    return;
  }
  ctx.reloads.ok++;
  ctx.log(`cqp: reload #${n}: ${describeDiff(diff)}${edited.length > 0 ? ` (changed: ${edited.join(', ')})` : ''}`);
}

/** After a refused reload: the generations counted for processes that never ran are given back. */
function restoreStats(ctx: Context, fresh: FreshStage[], diff: ReloadDiff): void {
  for (const { plan } of fresh) {
    const stats = ctx.stats.get(plan.name);
    const running = ctx.stages.find((s) => s.plan.name === plan.name);
    if (!stats) continue;
    if (running) {
      stats.generation--;
      stats.pid = running.proc.pid;
    } else {
      ctx.stats.delete(plan.name);
    }
  }
  for (const name of diff.sinks.added) ctx.stats.delete(name);
}

/**
 * Replaces the source: the old one is stopped (it finishes the events in hand), everything it sent
 * is forwarded, and the new one resumes after the last position forwarded.
 */
async function swapSource(ctx: Context, plan: SourcePlan, problems: string[]): Promise<void> {
  const old = ctx.source as NonNullable<Context['source']>;
  const targets = [...old.link.currentTargets];
  old.link.endTargets = false;
  old.proc.stop('SIGTERM');
  await old.link.done;
  await old.proc.exit;
  const resume = laterPositions((await resumePositions(ctx.plan.sinks)) ?? {}, old.link.positions);
  if (old.plan.name !== plan.name) ctx.stats.delete(old.plan.name);
  let started = spawnProc(ctx, plan, 'source', targets, resume, false);
  try {
    await started.proc.started(ctx.graceMs);
    watch(ctx, started.proc);
  } catch (error) {
    started.proc.stop('SIGKILL');
    await started.proc.exit;
    problems.push(`${messageOf(error)}; the previous source goes on`);
    started = spawnProc(ctx, old.plan, 'source', targets, resume);
    plan = old.plan as SourcePlan;
  }
  const link = linkFrom(ctx, started.proc, started.stats, targets, true);
  ctx.source = { plan, proc: started.proc, link, stats: started.stats };
}

/** Removes, replaces and adds sinks between two lines of the stages' output. */
async function swapSinks(ctx: Context, diff: ReloadDiff, next: PipelinePlan, added: SinkUnit[], problems: string[]): Promise<void> {
  const { sinks } = diff;
  if (sinks.added.length + sinks.changed.length + sinks.removed.length === 0) return;
  const fan = ctx.lastLink();
  await fan?.hold();
  // A replaced sink is stopped before its successor starts: both may need the same file (the log's lock).
  const going = [...sinks.removed, ...sinks.changed]
    .map((name) => ctx.units.get(name) as SinkUnit)
    .sort((a, b) => Number(readsLog(b)) - Number(readsLog(a)));
  for (const unit of going) {
    ctx.units.delete(unit.plan.name);
    if (readsLog(unit)) {
      unit.sink.stop('SIGTERM');
    } else {
      fan?.retarget(fanoutTargets(ctx));
      const feed = unit.where ?? unit.sink;
      feed.expected ??= 'end';
      feed.stdin.end();
    }
    await ctx.exited(ctx.unitProcs(unit));
  }
  for (const name of sinks.changed) {
    const plan = next.sinks.find((s) => s.name === name) as SinkPlan;
    let unit = await spawnUnit(ctx, plan, false);
    try {
      await Promise.all(ctx.unitProcs(unit).map((p) => p.started(ctx.graceMs)));
      for (const p of ctx.unitProcs(unit)) watch(ctx, p, unit);
    } catch (error) {
      for (const p of ctx.unitProcs(unit)) p.stop('SIGKILL');
      const old = going.find((u) => u.plan.name === name) as SinkUnit;
      problems.push(`${messageOf(error)}; sink ${name} keeps its previous definition`);
      unit = await spawnUnit(ctx, old.plan);
      next.sinks[next.sinks.indexOf(plan)] = old.plan;
    }
    ctx.units.set(name, unit);
  }
  for (const unit of added) ctx.units.set(unit.plan.name, unit);
  fan?.retarget(fanoutTargets(ctx));
  await fan?.release();
}
