import { randomUUID } from 'node:crypto';
import * as z from 'zod';
import { KEEP, defineFilter, type JsonObject } from '../core/component.js';
import { CqpError } from '../core/errors.js';
import { parseJson } from '../core/json.js';
import { parsePath } from '../core/paths.js';

interface Assignment {
  keys: string[];
  value: unknown;
}

function parseAssignment(text: string): Assignment {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new CqpError('USAGE', `--set ${JSON.stringify(text)}: write path=value, e.g. --set payload.source=shop`);
  const raw = text.slice(eq + 1);
  let value: unknown = raw;
  try {
    value = parseJson(raw);
  } catch {
    // Not JSON: the value is the text itself.
  }
  return { keys: parsePath(text.slice(0, eq)), value };
}

/** Sets a value at a path unless one is there; returns true when it changed the event. */
function setMissing(event: JsonObject, keys: string[], value: unknown): boolean {
  let cur: JsonObject = event;
  for (let i = 0; i < keys.length - 1; i++) {
    const key = keys[i] as string;
    const next = cur[key];
    if (next === undefined) {
      const created: JsonObject = {};
      cur[key] = created;
      cur = created;
    } else if (typeof next === 'object' && next !== null) {
      cur = next as JsonObject;
    } else {
      throw new Error(`cannot set ${keys.join('.')}: ${keys.slice(0, i + 1).join('.')} is not an object`);
    }
  }
  const last = keys[keys.length - 1] as string;
  if (cur[last] !== undefined) return false;
  cur[last] = value;
  return true;
}

export default defineFilter({
  name: 'enrich',
  summary: 'add header.eventId and header.detectionTimestamp when missing (never overwrites)',
  description:
    'Adds header.eventId ("events/<uuid>") and header.detectionTimestamp (now, ISO-8601) to events that lack ' +
    'them, and any --set path=value fields that are missing (the value is JSON when it parses, else text). ' +
    'Existing values are never overwritten, so re-processing logged events changes nothing and unchanged ' +
    'events are forwarded as their original bytes.',
  options: z.object({
    set: z.array(z.string()).default([]).describe('path=value to add when missing (repeatable)'),
    idPrefix: z.string().default('events/').describe('prefix of generated event ids'),
  }),
  examples: [{}, { set: ['payload.source=shop', 'header.rel.next=null'] }],
  checks: { set: (set) => set.map(parseAssignment) },
  create({ set, idPrefix }) {
    const assignments = set.map(parseAssignment);
    // One Date per millisecond, not per event.
    let lastMs = 0;
    let lastIso = '';
    const now = (): string => {
      const ms = Date.now();
      if (ms !== lastMs) {
        lastMs = ms;
        lastIso = new Date(ms).toISOString();
      }
      return lastIso;
    };
    return {
      process(e) {
        let header = e.header;
        if (header === undefined) {
          header = {};
          e.header = header;
        } else if (typeof header !== 'object' || header === null || Array.isArray(header)) {
          throw new Error('header is not an object');
        }
        const h = header as JsonObject;
        let changed = false;
        if (h.eventId === undefined) {
          h.eventId = `${idPrefix}${randomUUID()}`;
          changed = true;
        }
        if (h.detectionTimestamp === undefined) {
          h.detectionTimestamp = now();
          changed = true;
        }
        for (const a of assignments) changed = setMissing(e, a.keys, a.value) || changed;
        return changed ? e : KEEP;
      },
    };
  },
});
