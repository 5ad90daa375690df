import { loadFrom, type ComponentDefinition, type ComponentFiles, type ComponentKind } from './core/component.js';
import { filterFiles } from './filters/files.js';
import { sinkFiles } from './sinks/files.js';
import { sourceFiles } from './sources/files.js';

/**
 * The static registry: add a component by adding its file to its kind's list (filters/files.ts,
 * sources/files.ts, sinks/files.ts), under its CLI word. A file is imported only when a command needs
 * it, so `cqp-filter map` loads map's code, not every component's (start-up time is mostly module
 * loading); a component's process loads only its kind's list (filters/main.ts and the like).
 */
export const componentFiles: Record<ComponentKind, ComponentFiles> = { filter: filterFiles, source: sourceFiles, sink: sinkFiles };

/** Names of the components of one kind, in registry order, without loading any. */
export function componentNames(kind: ComponentKind): string[] {
  return Object.keys(componentFiles[kind]);
}

/** Loads the named components of one kind (all of them without names), in registry order. */
export function loadComponents(kind: ComponentKind, names: readonly string[] = componentNames(kind)): Promise<ComponentDefinition[]> {
  return loadFrom(componentFiles[kind], names);
}

