import { existsSync } from 'node:fs';
import { compareN, minimumPositions, type PositionMap } from '../core/position.js';
import { readLogApplied } from '../log/reader.js';
import type { SinkPlan } from './config.js';

/** Per source, the larger of two maps' positions. */
export function laterPositions(a: PositionMap, b: PositionMap): PositionMap {
  const out: PositionMap = { ...a };
  for (const [source, n] of Object.entries(b)) {
    const mine = out[source];
    if (mine === undefined || compareN(n, mine) > 0) out[source] = n;
  }
  return out;
}

/** What an exactly-once sink has durably applied, read without taking its locks. */
export async function sinkApplied(sink: SinkPlan): Promise<PositionMap> {
  if (sink.type === 'log') {
    const path = sink.options.path as string;
    return existsSync(path) ? readLogApplied(path) : {};
  }
  if (sink.type === 'sqlite') {
    // Loaded when needed (SQLite and the view definitions): views that follow the log never are.
    const [{ loadViewsFile }, { readViewsApplied }] = await Promise.all([import('../views/definition.js'), import('../views/store.js')]);
    const views = sink.options.views as string | undefined;
    return readViewsApplied(sink.options.db as string, views === undefined ? undefined : loadViewsFile(views));
  }
  return {};
}

/** Where the source resumes: the smallest durable position of the exactly-once sinks it feeds. */
export async function resumePositions(sinks: readonly SinkPlan[]): Promise<PositionMap | undefined> {
  const fed = sinks.filter((s) => s.exactlyOnce && s.logInput === undefined);
  if (fed.length === 0) return undefined;
  return minimumPositions(await Promise.all(fed.map(sinkApplied)));
}
