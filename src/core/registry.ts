import type { ComponentDefinition, ComponentKind, FilterDefinition, SinkDefinition, SourceDefinition } from './component.js';
import { filters, sinks, sources } from '../components.js';

/** Every built-in component, by kind. */
export const registry: Record<ComponentKind, readonly ComponentDefinition[]> = {
  filter: filters,
  source: sources,
  sink: sinks,
};

/** The component of this kind and name, if there is one. */
export function findComponent(kind: 'filter', name: string): FilterDefinition | undefined;
export function findComponent(kind: 'source', name: string): SourceDefinition | undefined;
export function findComponent(kind: 'sink', name: string): SinkDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined;
export function findComponent(kind: ComponentKind, name: string): ComponentDefinition | undefined {
  return registry[kind].find((c) => c.name === name);
}

/** Names of the components of one kind, for suggestions and listings. */
export function componentNames(kind: ComponentKind): string[] {
  return registry[kind].map((c) => c.name);
}
