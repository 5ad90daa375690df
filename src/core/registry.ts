import type { ComponentDefinition, ComponentKind, FilterDefinition, SinkDefinition, SourceDefinition } from './component.js';
import { componentNames, loadComponents } from '../components.js';

export { componentNames };

/**
 * Every built-in component, by kind, loaded: for the commands that check or run whole pipelines
 * (`cqp run`, `replay`, `lint`). A component's own process loads only its file (see component-cli.ts).
 */
export const registry: Record<ComponentKind, readonly ComponentDefinition[]> = {
  filter: await loadComponents('filter'),
  source: await loadComponents('source'),
  sink: await loadComponents('sink'),
};

/** The component of this kind and name, if there is one. */
export function findComponent(kind: 'filter', name: string): FilterDefinition | undefined;
export function findComponent(kind: 'source', name: string): SourceDefinition | undefined;
export function findComponent(kind: 'sink', name: string): SinkDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined {
  return registry[kind].find((c) => c.name === name);
}
