/**
 * Where each exactly-once sink ended, beside where the log ends, read from the files themselves (the
 * log, and what each sink stored with its rows), never from progress reports: the check behind "a run
 * that says it succeeded left no view behind its log", and the positions in the end-of-run summaries.
 */
import { messageOf } from '../core/errors.js';
import { compareN, type PositionMap } from '../core/position.js';
import { openCommandLog, type CommandLog } from '../log/command-log.js';
import type { SinkPlan } from './plan.js';
import { sinkApplied } from './positions.js';

/** The end of a log: its position key (`log:<logId>`) and the seq a sink must hold to have read all of it. */
export interface LogEnd {
  key: string;
  seq: number;
}

/** Where the log at `path` (or the log opened already) ends now; undefined when it does not exist yet. */
export async function readLogEnd(at: string | CommandLog): Promise<LogEnd | undefined> {
  const log = typeof at === 'string' ? await openCommandLog(at) : at;
  try {
    if (!(await log.exists())) return undefined;
    const tail = await log.tail();
    return { key: `log:${tail.logId}`, seq: tail.lastSeq };
  } finally {
    if (typeof at === 'string') await log.close();
  }
}

/** One exactly-once sink's end: the summary's words, and whether it stopped short of the log's end. */
export interface SinkEnd {
  name: string;
  /** `at seq 30000 of 30000`, or the positions held when there is no log to compare with. */
  text: string;
  /** The sink was to hold every record of the log (it reads the log itself) and does not. */
  short: boolean;
}

/**
 * The end of each exactly-once sink in `sinks`. `log`: the log the run wrote or the replay read, and
 * the seq it ends at; a sink that reads that log itself must hold its last record. The sink writing
 * the log (`log.writer`) is at its own end.
 */
export async function sinkEnds(sinks: readonly SinkPlan[], log: { end: LogEnd; writer?: string | undefined } | undefined): Promise<SinkEnd[]> {
  const ends: SinkEnd[] = [];
  for (const plan of sinks) {
    if (!plan.exactlyOnce) continue;
    if (log && plan.name === log.writer) {
      ends.push({ name: plan.name, text: `at seq ${log.end.seq} of ${log.end.seq}`, short: false });
      continue;
    }
    let applied: PositionMap;
    try {
      applied = await sinkApplied(plan);
    } catch (error) {
      ends.push({ name: plan.name, text: `its position cannot be read (${messageOf(error)})`, short: plan.logInput !== undefined });
      continue;
    }
    if (log) {
      const held = applied[log.end.key] ?? '0';
      const short = plan.logInput !== undefined && compareN(held, String(log.end.seq)) < 0;
      ends.push({ name: plan.name, text: `at seq ${held} of ${log.end.seq}`, short });
      continue;
    }
    const held = Object.entries(applied).map(([source, n]) => `${source}:${n}`);
    ends.push({ name: plan.name, text: held.length === 0 ? 'at no position' : `at ${held.join(', ')}`, short: false });
  }
  return ends;
}
