/**
 * The files a pipeline's components read when they start (a views file and its handler modules, a JSON
 * Schema, a module), found from what each component's definition declares (`reads`), and what they hold:
 * a reload compares them by content, and `cqp run` watches them.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import type { ComponentDefinition } from '../core/component.js';
import { messageOf } from '../core/errors.js';
import { findComponent } from '../core/registry.js';
import type { FileHashes, PipelinePlan, SinkPlan, SourcePlan, StagePlan } from './plan.js';

type Component = SourcePlan | StagePlan | SinkPlan;

/** Stands for a file that cannot be read: the component, once started, says why. */
const UNREADABLE = 'unreadable';

function hashOf(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return UNREADABLE;
  }
}

/** Each component of the plan with its definition (undefined for a `run:` program). */
function components(plan: PipelinePlan): Array<{ component: Component; def: ComponentDefinition | undefined }> {
  return [
    { component: plan.source, def: findComponent('source', plan.source.type) },
    ...plan.stages.map((s) => ({ component: s, def: s.filter === undefined ? undefined : findComponent('filter', s.filter) })),
    ...plan.sinks.map((s) => ({ component: s, def: findComponent('sink', s.type) })),
  ];
}

/** The files one component reads and their hashes; `problems` gets a file that names others and is not valid. */
async function filesOf(component: Component, def: ComponentDefinition | undefined, problems: string[]): Promise<FileHashes> {
  const files: Record<string, string> = {};
  for (const [option, read] of Object.entries(def?.reads ?? {})) {
    // Path options are resolved against the pipeline's folder when the plan is built.
    const file = component.options[option];
    if (typeof file !== 'string' || read === undefined) continue;
    files[file] = hashOf(file);
    if (read.names === undefined || files[file] === UNREADABLE) continue;
    try {
      for (const named of await read.names(file)) files[named] = hashOf(named);
    } catch (error) {
      problems.push(`${component.name}: ${messageOf(error)}`);
    }
  }
  return files;
}

/**
 * Sets each component's `files` to what the files it reads hold now; returns the problems found (a views
 * file that does not validate), one per component, each naming the file, line and field.
 */
export async function readComponentFiles(plan: PipelinePlan): Promise<string[]> {
  const problems: string[] = [];
  for (const { component, def } of components(plan)) component.files = await filesOf(component, def, problems);
  return problems;
}

/** The pipeline as a reload compares it: its text and what every file its components read holds. */
export function contentKey(plan: PipelinePlan): string {
  return JSON.stringify([plan.text, ...components(plan).map(({ component }) => component.files ?? {})]);
}

/** The pipeline file and every file its components read. */
export function filesRead(plan: PipelinePlan): string[] {
  return [...new Set([plan.file, ...components(plan).flatMap(({ component }) => Object.keys(component.files ?? {}))])];
}

/** The files read by a component of both plans that hold other bytes in `next`, relative to its folder. */
export function changedFiles(old: PipelinePlan, next: PipelinePlan): string[] {
  const before = new Map(components(old).map(({ component }) => [component.name, component.files ?? {}]));
  const changed = new Set<string>();
  for (const { component } of components(next)) {
    const was = before.get(component.name);
    for (const [file, hash] of Object.entries(component.files ?? {})) {
      const had = was?.[file];
      if (had !== undefined && had !== hash) changed.add(relative(next.dir, file));
    }
  }
  return [...changed];
}
