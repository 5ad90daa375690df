import type { ComponentDefinition, ComponentKind, FilterDefinition, SinkDefinition, SourceDefinition } from './component.js';
import { componentFiles, componentNames, loadComponents } from '../components.js';

export { componentNames };

/**
 * The built-in components loaded so far, by kind: the commands that check or run whole pipelines
 * (`cqp run`, `replay`, `lint`) load the ones a pipeline names (`loadNamedComponents`) before they look
 * them up, not every one: loading them all (acorn, node:crypto, the Kinesis code) was most of a short
 * replay's start. A component's own process loads only its file (see component-cli.ts).
 */
export const registry: Record<ComponentKind, ComponentDefinition[]> = { filter: [], source: [], sink: [] };

/** Loads the named components of one kind that are not loaded yet (every one without names); unknown names are skipped. */
export async function loadNamedComponents(kind: ComponentKind, names: readonly string[] = componentNames(kind)): Promise<void> {
  const missing = [...new Set(names)].filter((name) => !registry[kind].some((c) => c.name === name));
  const loaded = await loadComponents(kind, missing);
  // Two callers may race for the same file: keep one definition per name.
  for (const def of loaded) if (!registry[kind].some((c) => c.name === def.name)) registry[kind].push(def);
}

/**
 * The component of this kind and name, if there is one. A built-in one must have been loaded first: a
 * lookup that forgot to would otherwise read as "unknown component".
 */
export function findComponent(kind: 'filter', name: string): FilterDefinition | undefined;
export function findComponent(kind: 'source', name: string): SourceDefinition | undefined;
export function findComponent(kind: 'sink', name: string): SinkDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined {
  const def = registry[kind].find((c) => c.name === name);
  if (def === undefined && Object.hasOwn(componentFiles[kind], name)) throw new Error(`${kind} ${name} is looked up before it was loaded (loadNamedComponents)`);
  return def;
}
