import type { ComponentDefinition, ComponentKind } from './core/component.js';

type Loader = () => Promise<{ default: ComponentDefinition }>;

/**
 * The static registry: add a component by adding its file here, under its CLI word. A file is imported
 * only when a command needs it, so `cqp-filter map` loads map's code, not every component's (start-up
 * time is mostly module loading).
 */
export const componentFiles: Record<ComponentKind, Record<string, Loader>> = {
  filter: {
    enrich: () => import('./filters/enrich.js'),
    validate: () => import('./filters/validate.js'),
    where: () => import('./filters/where.js'),
    map: () => import('./filters/map.js'),
    dedupe: () => import('./filters/dedupe.js'),
    module: () => import('./filters/module.js'),
  },
  source: {
    stdin: () => import('./sources/stdin.js'),
    file: () => import('./sources/file.js'),
    demo: () => import('./sources/demo.js'),
    log: () => import('./sources/log.js'),
    kinesis: () => import('./sources/kinesis.js'),
  },
  sink: {
    stdout: () => import('./sinks/stdout.js'),
    file: () => import('./sinks/file.js'),
    log: () => import('./sinks/log.js'),
    sqlite: () => import('./sinks/sqlite.js'),
    postgres: () => import('./sinks/postgres.js'),
    kinesis: () => import('./sinks/kinesis.js'),
  },
};

/** Names of the components of one kind, in registry order, without loading any. */
export function componentNames(kind: ComponentKind): string[] {
  return Object.keys(componentFiles[kind]);
}

/** Loads the named components of one kind (all of them without names), in registry order. */
export async function loadComponents(kind: ComponentKind, names: readonly string[] = componentNames(kind)): Promise<ComponentDefinition[]> {
  const files = componentFiles[kind];
  const loaded = await Promise.all(names.flatMap((name) => (Object.hasOwn(files, name) ? [files[name]?.()] : [])));
  return loaded.flatMap((m) => (m ? [m.default] : []));
}
