/**
 * Builds changed (and new) views beside the live ones: their new versions are kept apart from the live
 * ones (where, the store says: SQLite in a database of its own next to the views database, PostgreSQL
 * in tables under version names in the same schema), filled from the command log's first event in
 * chunks between the live batches, and each is swapped in once it holds everything its live version
 * holds. The live views go on being served and updated meanwhile; a crash leaves the build where its
 * last chunk committed, and the next start goes on from there.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CqpError, messageOf } from '../core/errors.js';
import type { ErrorMode } from '../core/policy.js';
import { parseJson } from '../core/json.js';
import { compareN, type PositionMap } from '../core/position.js';
import { openCommandLog } from '../log/command-log.js';
import { logEventReader, logEventReaderInWorker } from '../log/input.js';
import type { ViewDefinition } from './definition.js';
import type { BadEventHandler, PendingView, ViewEvent } from './store.js';

export { rebuildFileOf } from './versions.js';

/** The versions being built beside the live views, as a store of their own. */
export interface ShadowStore {
  readonly views: string[];
  applied(): PositionMap;
  appliedBy(view: string): PositionMap;
  applyBatch(items: ViewEvent[], onBad: BadEventHandler, through?: PositionMap): void | Promise<void>;
  /** Lets go of a view once its version has been swapped in. */
  forget(view: string): void | Promise<void>;
  close(): void | Promise<void>;
}

/** A views store whose changed and new views (`pending`) can be built beside the live ones and swapped in. */
export interface BesideStore {
  readonly pending: PendingView[];
  /** Milliseconds spent applying live batches so far. */
  readonly busyMs: number;
  /** Per source, the largest position handed to any live view so far. */
  reach(): PositionMap;
  appliedBy(view: string): PositionMap;
  /** Opens (creating it) the store of the versions being built; `fresh`: emptied first. */
  openShadow(views: ViewDefinition[] | undefined, fresh: boolean): Promise<ShadowStore>;
  /** Removes what a finished build left, once nothing is pending. */
  removeShadow(): void;
  /**
   * Puts the version of `pending` built in `shadow` in place of the live one, in one transaction, when
   * `ready()` holds where no live batch can come between (checked there); true when it did.
   */
  adopt(pending: PendingView, shadow: ShadowStore, ready: () => boolean): boolean | Promise<boolean>;
}

/** True when `error` (or what caused it) says the disk is full. */
export function isDiskFull(error: unknown): boolean {
  for (let e = error; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (code === 'SQLITE_FULL' || code === 'ENOSPC') return true;
  }
  return false;
}

/** What a build given up for lack of space says it did. */
const SPACE_GIVEN_BACK =
  'its database is removed to give the space back to the live views, which go on being served and updated; once there is room, the next start of the sink builds it again from the first event';

/**
 * Share of the thread the build leaves to the live stream while that stream has events: after a chunk
 * that took `d` ms the build waits `LIVE_SHARE / (1 - LIVE_SHARE) * d` before the next one.
 */
const LIVE_SHARE = 0.75;
/** Share of the time between two chunks the live stream spent applying batches, above which it counts as busy. */
const BUSY_LIVE = 0.1;
const REPORT_MS = 2000;
/** About how long one committed part of the build takes, and the bounds of its number of events. */
const CHUNK_MS = 250;
const MIN_CHUNK = 200;
const MAX_CHUNK = 50_000;

/** How far a build beside the live views has got. */
export interface RebuildProgress {
  views: string[];
  /** Events of the log applied (its last seq applied), and the log's length when last asked. */
  applied: number;
  total: number;
  /** Events a second over this run of the build, and the seconds left at that rate (undefined before any). */
  rate: number;
  etaSeconds: number | undefined;
  failed?: string | undefined;
}

export interface Rebuild {
  progress(): RebuildProgress | undefined;
  /** The progress in a few words, for the status `cqp run` shows; undefined once nothing is left to build. */
  activity(): string | undefined;
  /** Stops the build where it is (it goes on at the next start) and closes its database. */
  stop(): Promise<void>;
  /**
   * Called with the error of a live write: when it says the disk is full and a build is under way, the
   * build is stopped and its database removed (the one thing the sink can free), and true is returned so
   * that the live write is tried again. The live views come first.
   */
  giveWay(error: unknown): Promise<boolean>;
}

export interface RebuildOptions {
  /** The command log the sink follows. */
  log: string;
  warn: (message: string) => void;
  /** The sink's error policy: under `fail` an event a new version cannot apply fails its build. */
  mode: ErrorMode;
  /** Read and check the log on a worker thread (the built cqp has one; the tests of this module read in-thread). */
  readInWorker?: boolean | undefined;
}

function seqOf(map: PositionMap): number {
  let seq = 0;
  for (const source in map) seq = Math.max(seq, Number((map[source] as string).split('.')[0]));
  return seq;
}

/** True when `s` is `source` (a log's whole) or one of its partitions (`<source>/p<k>`, numbered in the same sequence). */
function ofLog(s: string, source: string): boolean {
  return s === source || (s.startsWith(`${source}/p`) && /^\d+$/.test(s.slice(source.length + 2)));
}

/** The sources of `reach` that are not of the log `source`: positions a build from that log can never be compared with. */
function foreignSources(reach: PositionMap, source: string): string[] {
  return Object.keys(reach).filter((s) => !ofLog(s, source));
}

/**
 * True when `have` (a version built from the log `source`) holds at least every position of `reach`
 * (what the live views hold). A source of `reach` not of that log is never covered: a version built
 * from this log cannot hold what the live views took from another.
 */
function covers(have: PositionMap, reach: PositionMap, source: string): boolean {
  const n = have[source];
  for (const s in reach) {
    if (!ofLog(s, source)) return false;
    if (n === undefined || compareN(n, reach[s] as string) < 0) return false;
  }
  return true;
}

/** Starts building `main.pending` beside the live views; with nothing pending, clears what a finished build left. */
export function startRebuild(main: BesideStore, options: RebuildOptions): Rebuild {
  if (main.pending.length === 0) {
    main.removeShadow();
    return { progress: () => undefined, activity: () => undefined, stop: async () => {}, giveWay: async () => false };
  }
  const { warn } = options;
  for (const p of main.pending) {
    const why = p.reason === 'changed' ? 'definition changed' : 'new view';
    const live = p.reason === 'changed' ? 'the live one' : 'the live views';
    const frozen = p.frozen ? ' (the live version is served as it stands until then: the database holds no definition it could be kept up to date from, as one built by an older cqp)' : '';
    warn(`rebuilding ${p.definition.table} (${why}) beside ${live}${frozen}`);
  }
  const controller = new AbortController();
  const started = Date.now();
  let state: RebuildProgress = { views: main.pending.map((p) => p.definition.table), applied: 0, total: 0, rate: 0, etaSeconds: undefined };
  const run = async (): Promise<void> => {
    const definitions = main.pending.map((p) => p.definition).filter((d): d is ViewDefinition => d.kind !== 'events');
    // Without a views file the one view pending is the events table.
    const views = definitions.length === main.pending.length ? definitions : undefined;
    const log = await openCommandLog(options.log);
    // The live stream waits for the log to exist as well; stopped meanwhile, there is nothing to build from.
    if (!(await log.waitFor(controller.signal))) {
      await log.close();
      return;
    }
    const source = `log:${await log.logId()}`;
    // Live views that hold positions of another log (the log was replaced or made again) hold what no
    // build from this one can be checked against: swapping one in could replace them with less. They are
    // kept as they stand and nothing is built beside them.
    const foreign = foreignSources(main.reach(), source);
    if (foreign.length > 0) {
      await log.close();
      const names = main.pending.map((p) => p.definition.table).join(', ');
      const why = `the live views were built from another log (they hold positions of ${foreign.join(', ')}; this sink follows ${source})`;
      state = { ...state, failed: `not built beside the live views: ${why}` };
      warn(
        `not rebuilding ${names} beside the live views: ${why}, so a version built from this log could never be checked to hold what they hold; ` +
          'the live versions are kept as they stand; to build the views from this log, give the sink a new database (or delete this one)',
      );
      return;
    }
    let shadow = await main.openShadow(views, false);
    // Positions of another log (the sink followed another one since) say nothing about this one: start over.
    if (shadow.views.some((v) => Object.keys(shadow.appliedBy(v)).some((s) => s !== source))) {
      await shadow.close();
      shadow = await main.openShadow(views, true);
    }
    try {
      const from = seqOf(shadow.applied());
      state.total = (await log.tail()).lastSeq;
      let appliedThisRun = 0;
      let lastReport = Date.now();
      // The progress, kept as each chunk is applied (the status asks for it at any time).
      const measure = (): void => {
        const seconds = (Date.now() - started) / 1000;
        const rate = seconds > 0 ? appliedThisRun / seconds : 0;
        const applied = seqOf(shadow.applied());
        const total = Math.max(state.total, applied);
        state = { ...state, views: shadow.views, applied, total, rate, etaSeconds: rate > 0 ? Math.max(0, total - applied) / rate : undefined };
      };
      const report = async (): Promise<void> => {
        state.total = Math.max(state.total, (await log.tail()).lastSeq);
        measure();
        const pct = state.total > 0 ? ` (${Math.floor((100 * state.applied) / state.total)}%)` : '';
        const eta = state.etaSeconds === undefined ? '' : `, about ${Math.ceil(state.etaSeconds)} s left`;
        warn(`rebuilding ${state.views.join(', ')}: ${state.applied} of ${state.total} events${pct}, ${Math.round(state.rate)} events/s${eta}`);
      };
      if (from > 0) warn(`rebuilding ${shadow.views.join(', ')}: going on from event ${from}, where the build got to`);
      const swap = async (): Promise<void> => {
        for (const p of [...main.pending]) {
          const view = p.definition.table;
          const ready = (): boolean => covers(shadow.appliedBy(view), main.reach(), source);
          if (!ready() || !(await main.adopt(p, shadow, ready))) continue;
          await shadow.forget(view);
          const at = seqOf(shadow.appliedBy(view)) || seqOf(main.appliedBy(view));
          const bad = skipped === 0 ? '' : ` (${skipped} events it could not apply skipped, as --on-error ${options.mode} says; the first: ${firstSkipped ?? ''})`;
          warn(`swapped in the new version of ${view} at event ${at}, built in ${((Date.now() - started) / 1000).toFixed(1)} s; the old version is dropped${bad}`);
        }
      };
      // Events a new version could not apply, skipped under --on-error skip or dead-letter (the live stream dead-letters its own).
      let skipped = 0;
      let firstSkipped: string | undefined;
      let liveBusy = main.busyMs;
      let lastPause = performance.now();
      await swap();
      const reader = options.readInWorker === true ? logEventReaderInWorker : logEventReader;
      const events = reader(options.log, { follow: true })(shadow.applied(), controller.signal);
      let resumed = performance.now();
      let chunkSize = MIN_CHUNK;
      for await (const batch of events) {
        if (main.pending.length === 0) break;
        const items: ViewEvent[] = [];
        for (const e of batch) {
          let event: unknown;
          try {
            event = parseJson(e.text, e.scan);
          } catch {
            continue;
          }
          if (typeof event === 'object' && event !== null && !Array.isArray(event)) items.push({ event, position: e.position, text: e.text });
        }
        const last = batch[batch.length - 1]?.position;
        // Applied in parts cut to take about CHUNK_MS each, each committed with its position: a build whose
        // views are slow per event (a handler's round trips) still stores its progress often.
        let from = 0;
        do {
          const part = items.slice(from, from + chunkSize);
          from += part.length;
          const before = performance.now();
          await shadow.applyBatch(
            part,
            (index, message) => {
              const n = part[index]?.position?.n ?? '?';
              if (options.mode === 'fail') throw new CqpError('BAD_INPUT', `event ${n} of the log: ${message}`);
              skipped++;
              if (firstSkipped === undefined) firstSkipped = `event ${n}: ${message}`;
            },
            from >= items.length && last ? { [last.source]: last.n } : undefined,
          );
          if (part.length > 0) chunkSize = Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, Math.round((part.length * CHUNK_MS) / Math.max(1, performance.now() - before))));
        } while (from < items.length);
        // The time since the last pause: reading and parsing the chunk count as much as applying it.
        const took = performance.now() - resumed;
        appliedThisRun += items.length;
        measure();
        await swap();
        if (main.pending.length === 0) break;
        if (Date.now() - lastReport >= REPORT_MS) {
          lastReport = Date.now();
          await report();
        }
        // While the live stream keeps the store busy, the build takes only its share of the thread; while
        // the live stream is idle or slow, it goes flat out.
        const now = performance.now();
        const live = (main.busyMs - liveBusy) / Math.max(1, now - lastPause);
        if (live > BUSY_LIVE) await sleep((took * LIVE_SHARE) / (1 - LIVE_SHARE));
        else await new Promise((resolve) => setImmediate(resolve));
        liveBusy = main.busyMs;
        lastPause = now;
        resumed = performance.now();
      }
    } finally {
      controller.abort();
      await shadow.close();
      await log.close();
    }
    if (main.pending.length === 0) main.removeShadow();
  };
  /** Whether the build gave its space back already (a full disk): it does so once. */
  let gaveWay = false;
  let retried = false;
  const done = run().catch((error: unknown) => {
    if (controller.signal.aborted && main.pending.length > 0 && !(error instanceof CqpError)) return;
    state = { ...state, failed: messageOf(error) };
    const names = main.pending.map((p) => p.definition.table).join(', ');
    if (isDiskFull(error)) {
      // Left in place, the build's files would keep the live views from writing on the same disk.
      main.removeShadow();
      gaveWay = true;
      warn(`rebuilding ${names} failed: ${messageOf(error)}; ${SPACE_GIVEN_BACK}`);
      return;
    }
    warn(`rebuilding ${names} failed: ${messageOf(error)}; the live version stays as it is served, and the next start of the sink tries again from where the build got to`);
  });
  return {
    progress: () => (main.pending.length === 0 ? undefined : state),
    activity() {
      if (main.pending.length === 0) return undefined;
      const names = state.views.join(', ');
      if (state.failed !== undefined) return `rebuilding ${names} failed: ${state.failed}`;
      if (state.total === 0 || state.applied === 0) return `rebuilding ${names}`;
      const eta = state.etaSeconds === undefined ? '' : `, about ${Math.ceil(state.etaSeconds)} s left`;
      return `rebuilding ${names}: ${Math.floor((100 * state.applied) / state.total)}% of ${state.total} events${eta}`;
    },
    async stop() {
      controller.abort();
      await done;
    },
    async giveWay(error) {
      if (main.pending.length === 0 || !isDiskFull(error)) return false;
      controller.abort();
      await done;
      // The build itself found the disk full a moment before: its space is given back already, said once.
      if (gaveWay) {
        if (retried) return false;
        retried = true;
        return true;
      }
      gaveWay = true;
      retried = true;
      main.removeShadow();
      const names = main.pending.map((p) => p.definition.table).join(', ');
      state = { ...state, failed: 'stopped: the disk is full' };
      warn(`rebuilding ${names} stopped: the disk of the views database is full (${messageOf(error)}); ${SPACE_GIVEN_BACK}`);
      return true;
    },
  };
}
