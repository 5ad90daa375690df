import { compareN, minimumPositions, type PositionMap } from '../core/position.js';
import { findComponent } from '../core/registry.js';
import type { SinkPlan } from './plan.js';

/** Per source, the larger of two maps' positions. */
export function laterPositions(a: PositionMap, b: PositionMap): PositionMap {
  const out: PositionMap = { ...a };
  for (const [source, n] of Object.entries(b)) {
    const mine = out[source];
    if (mine === undefined || compareN(n, mine) > 0) out[source] = n;
  }
  return out;
}

/** What an exactly-once sink has durably applied, read from its store (as its definition reads it) without taking its locks. */
export async function sinkApplied(sink: SinkPlan): Promise<PositionMap> {
  const store = findComponent('sink', sink.type)?.store;
  return store?.positions ? store.positions(sink.options, { readsLog: sink.logInput !== undefined }) : {};
}

/** Where the source resumes: the smallest durable position of the exactly-once sinks it feeds. */
export async function resumePositions(sinks: readonly SinkPlan[]): Promise<PositionMap | undefined> {
  const fed = sinks.filter((s) => s.exactlyOnce && s.logInput === undefined);
  if (fed.length === 0) return undefined;
  return minimumPositions(await Promise.all(fed.map(sinkApplied)));
}
