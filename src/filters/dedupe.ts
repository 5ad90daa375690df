import * as z from 'zod';
import { KEEP, defineFilter } from '../core/component.js';
import { stringifyJson } from '../core/json.js';
import { compileFallbackPath } from '../core/paths.js';

export default defineFilter({
  name: 'dedupe',
  summary: 'drop repeats of the same id within a window of recent keys',
  description:
    'Keeps the first event of each key and drops later ones while the key is among the --window most recent ' +
    'keys. The key is the event id by default (header.eventId, falling back to id). Events without the key ' +
    'pass through. Kept events are forwarded as their original bytes.',
  options: z.object({
    key: z.string().optional().describe('dot path of the key (default: header.eventId, falling back to id)'),
    window: z.number().int().positive().default(100_000).describe('how many recent keys to remember'),
  }),
  examples: [{}, { key: 'header.rel.id', window: 1000 }],
  create({ key, window }) {
    const getKey = compileFallbackPath(key ? [key] : ['header.eventId', 'id']);
    const seen = new Set<string>();
    const ring: string[] = new Array<string>(window);
    let next = 0;
    return {
      process(e) {
        const value = getKey(e);
        if (value === undefined || value === null) return KEEP;
        // Written exactly: two ids that differ beyond a double's precision are two keys.
        const k = typeof value === 'string' ? value : (stringifyJson(value) ?? String(value));
        if (seen.has(k)) return null;
        const evicted = ring[next];
        if (evicted !== undefined) seen.delete(evicted);
        ring[next] = k;
        next = (next + 1) % window;
        seen.add(k);
        return KEEP;
      },
    };
  },
});
