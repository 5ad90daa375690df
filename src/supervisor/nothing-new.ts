import { dirname, relative } from 'node:path';
import type { PositionMap } from '../core/position.js';
import type { SinkPlan } from './plan.js';

/**
 * Why a run that read nothing read nothing: its source resumed after the positions its exactly-once sinks
 * already hold (a second run of a finite source, such as `demo --count N`, has nothing left to give).
 * Says where the source resumed and how to start over; undefined when the source started from its
 * beginning or gave events.
 */
export function nothingNewNote(resumedFrom: PositionMap | undefined, sourceOut: number, sinks: readonly SinkPlan[]): string | undefined {
  const held = Object.entries(resumedFrom ?? {}).map(([source, n]) => `${source}:${n}`);
  if (sourceOut > 0 || held.length === 0) return undefined;
  const stores = sinks.filter((s) => s.exactlyOnce).flatMap((s) => s.store ?? []);
  // A store named by a URL (a database) is no file: shown as given, and no folder holds it.
  const isUrl = (f: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(f);
  const names = [...new Set(stores)].map((f) => (isUrl(f) ? f : relative(process.cwd(), f) || f));
  const files = names.filter((f) => !isUrl(f));
  const folders = new Set(files.map((f) => dirname(f)));
  const [folder] = folders;
  // A log's files beside it (index, pid) go with it: one folder holding every store is the simple advice.
  const fresh =
    files.length < names.length
      ? 'empty those stores'
      : folders.size === 1 && folder !== '.'
        ? `delete the folder ${folder}/`
        : `delete ${names.length === 1 ? 'that file' : 'those files'}`;
  return (
    `cqp: nothing new: the sinks already hold the source's events up to ${held.join(', ')}` +
    ` (${names.join(', ')}), so the source resumed after them and had no more to give.` +
    ` To start over, ${fresh} or point the sinks at new paths.`
  );
}
