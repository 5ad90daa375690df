import type { PipelinePlan, SinkPlan, SourcePlan, StagePlan } from './plan.js';

/** What a reload changes, keyed by component name (source, stages and sinks). */
export interface ReloadDiff {
  added: string[];
  changed: string[];
  removed: string[];
  /** True when stages kept in both versions run in a different order. */
  orderChanged: boolean;
  sourceChanged: boolean;
  /**
   * The stretch of stages that is rewired: old stages [prefix, oldEnd) give way to new stages
   * [prefix, newEnd). Only the changed, added and removed ones in it start or stop; the rest, and the
   * stages before and after it, keep their processes. Undefined when the stages are the same.
   */
  stages: { prefix: number; oldEnd: number; newEnd: number } | undefined;
  sinks: { added: string[]; changed: string[]; removed: string[] };
  /** True when nothing runs differently. */
  empty: boolean;
}

/**
 * The identity of a component's definition: equal specs run the same command the same way, on files that
 * hold the same bytes (a views file, a schema, a module it reads).
 */
export function specOf(component: SourcePlan | StagePlan | SinkPlan): string {
  // A `run:` stage's onError is applied by the supervisor, not by its command: it is part of the spec too.
  const extra = 'where' in component ? [component.where ?? null, component.logInput ?? null] : 'runtime' in component ? [component.runtime ?? null] : [];
  return JSON.stringify([component.command, ...extra, component.files ?? {}]);
}

function keyed<T extends { name: string }>(items: readonly T[]): Map<string, T> {
  return new Map(items.map((i) => [i.name, i]));
}

/** Compares two pipelines by component name: added, changed, removed and stage order. */
export function reloadDiff(old: PipelinePlan, next: PipelinePlan): ReloadDiff {
  const added: string[] = [];
  const changed: string[] = [];
  const removed: string[] = [];

  const sourceChanged = old.source.name !== next.source.name || specOf(old.source) !== specOf(next.source) || old.dir !== next.dir;
  if (old.source.name !== next.source.name) {
    removed.push(old.source.name);
    added.push(next.source.name);
  } else if (sourceChanged) {
    changed.push(next.source.name);
  }

  const oldStages = keyed(old.stages);
  const newStages = keyed(next.stages);
  for (const s of next.stages) {
    const before = oldStages.get(s.name);
    if (!before) added.push(s.name);
    else if (specOf(before) !== specOf(s) || old.dir !== next.dir) changed.push(s.name);
  }
  for (const s of old.stages) if (!newStages.has(s.name)) removed.push(s.name);
  const keptOld = old.stages.filter((s) => newStages.has(s.name)).map((s) => s.name);
  const keptNew = next.stages.filter((s) => oldStages.has(s.name)).map((s) => s.name);
  const orderChanged = keptOld.join('\0') !== keptNew.join('\0');

  const same = (a: StagePlan | undefined, b: StagePlan | undefined): boolean =>
    a !== undefined && b !== undefined && a.name === b.name && specOf(a) === specOf(b) && old.dir === next.dir;
  let prefix = 0;
  while (prefix < old.stages.length && prefix < next.stages.length && same(old.stages[prefix], next.stages[prefix])) prefix++;
  let oldEnd = old.stages.length;
  let newEnd = next.stages.length;
  while (oldEnd > prefix && newEnd > prefix && same(old.stages[oldEnd - 1], next.stages[newEnd - 1])) {
    oldEnd--;
    newEnd--;
  }
  const stages = oldEnd === prefix && newEnd === prefix ? undefined : { prefix, oldEnd, newEnd };

  const oldSinks = keyed(old.sinks);
  const newSinks = keyed(next.sinks);
  const sinks = { added: [] as string[], changed: [] as string[], removed: [] as string[] };
  for (const s of next.sinks) {
    const before = oldSinks.get(s.name);
    if (!before) sinks.added.push(s.name);
    else if (specOf(before) !== specOf(s) || old.dir !== next.dir) sinks.changed.push(s.name);
  }
  for (const s of old.sinks) if (!newSinks.has(s.name)) sinks.removed.push(s.name);
  added.push(...sinks.added);
  changed.push(...sinks.changed);
  removed.push(...sinks.removed);

  const empty = !sourceChanged && stages === undefined && sinks.added.length + sinks.changed.length + sinks.removed.length === 0;
  return { added, changed, removed, orderChanged, sourceChanged, stages, sinks, empty };
}

/** `+added ~changed -removed` for the reload log line. */
export function describeDiff(diff: ReloadDiff): string {
  const parts = [
    ...diff.added.map((n) => `+${n}`),
    ...diff.changed.map((n) => `~${n}`),
    ...diff.removed.map((n) => `-${n}`),
  ];
  if (diff.orderChanged) parts.push('(stages reordered)');
  return parts.length > 0 ? parts.join(' ') : 'no changes';
}
