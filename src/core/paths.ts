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

type Step = (value: unknown) => unknown;

/**
 * A getter for one segment. Plain names read the property straight away; names an object inherits
 * (`constructor`, `toString`, `length` of arrays…) must be own properties; numeric segments index
 * arrays (and read objects' numeric keys).
 */
function stepFor(key: string): Step {
  if (INDEX.test(key)) {
    const index = Number(key);
    return (v) => (typeof v === 'object' && v !== null ? (Array.isArray(v) ? v[index] : (v as Record<string, unknown>)[key]) : undefined);
  }
  if (key in Object.prototype || key in Array.prototype) {
    return (v) =>
      typeof v === 'object' && v !== null && !Array.isArray(v) && Object.hasOwn(v, key) ? (v as Record<string, unknown>)[key] : undefined;
  }
  return (v) => (typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[key] : undefined);
}

/** Compiles a dot path to a getter that returns the value there, or undefined when the path is missing. */
export function compilePath(path: string): PathGetter {
  const steps = parsePath(path).map(stepFor);
  const [s0, s1, s2] = steps as [Step, Step, Step];
  // The common depths get straight-line getters; deeper paths loop.
  switch (steps.length) {
    case 1:
      return s0;
    case 2:
      return (v) => s1(s0(v));
    case 3:
      return (v) => s2(s1(s0(v)));
    default:
      return (v) => {
        let cur = v;
        for (let i = 0; i < steps.length && cur !== undefined; i++) cur = (steps[i] as Step)(cur);
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
