/**
 * Dot paths into events (`header.rel.id`, `header.eventName.0`): segments are property names, and a
 * numeric segment indexes an array. Compile a path once and call the getter per event.
 */
import { CqpError } from './errors.js';

export type PathGetter = (value: unknown) => unknown;

const INDEX = /^(0|[1-9]\d*)$/;

/** Splits a dot path into segments; throws a USAGE error on an empty path or an empty segment. */
export function parsePath(path: string): string[] {
  const segments = path.split('.');
  if (path.length === 0 || segments.some((s) => s.length === 0)) {
    throw new CqpError('USAGE', `"${path}" is not a dot path (write segments separated by single dots, like header.rel.id)`);
  }
  return segments;
}

function step(value: unknown, key: string, index: number): unknown {
  if (typeof value !== 'object' || value === null) return undefined;
  if (Array.isArray(value)) return index >= 0 ? value[index] : undefined;
  return Object.hasOwn(value, key) ? (value as Record<string, unknown>)[key] : undefined;
}

/** Compiles a dot path to a getter that returns the value there, or undefined when the path is missing. */
export function compilePath(path: string): PathGetter {
  const keys = parsePath(path);
  const indices = keys.map((k) => (INDEX.test(k) ? Number(k) : -1));
  const [k0, k1, k2] = keys;
  const [i0, i1, i2] = indices;
  // The common depths get straight-line getters; deeper paths loop.
  switch (keys.length) {
    case 1:
      return (v) => step(v, k0 as string, i0 as number);
    case 2:
      return (v) => step(step(v, k0 as string, i0 as number), k1 as string, i1 as number);
    case 3:
      return (v) => step(step(step(v, k0 as string, i0 as number), k1 as string, i1 as number), k2 as string, i2 as number);
    default:
      return (v) => {
        let cur = v;
        for (let i = 0; i < keys.length && cur !== undefined; i++) cur = step(cur, keys[i] as string, indices[i] as number);
        return cur;
      };
  }
}

/** Compiles paths tried in order: the first one present in an event gives the value. */
export function compileFallbackPath(paths: readonly string[]): PathGetter {
  const getters = paths.map(compilePath);
  if (getters.length === 1) return getters[0] as PathGetter;
  return (v) => {
    for (const g of getters) {
      const found = g(v);
      if (found !== undefined) return found;
    }
    return undefined;
  };
}

const cache = new Map<string, PathGetter>();

/** Reads the value at a dot path (compiled on first use and cached). */
export function getPath(value: unknown, path: string): unknown {
  let getter = cache.get(path);
  if (!getter) {
    getter = compilePath(path);
    if (cache.size < 1000) cache.set(path, getter);
  }
  return getter(value);
}
