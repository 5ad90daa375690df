import { resolve } from 'node:path';
import * as z from 'zod';
import { defineSink } from '../core/component.js';
import { viewEvents } from '../views/view-events.js';
import { viewsFileRead } from '../views/views-file.js';

export default defineSink({
  name: 'sqlite',
  summary: 'maintain SQLite query views from events (exactly once)',
  description:
    'Without --views, keeps a table `events` (seq, event_id, type, entity_key, time, body) to query with ' +
    "SQLite's JSON functions. With --views FILE (YAML), each view is a table kept from events: columns " +
    'taken from dot paths, and per event type an action (upsert, insert, delete, increment), or a JS ' +
    'handler module. Each batch and the position of its events are written in one transaction, so every ' +
    'view applies each event exactly once across crashes. A view redefined (its YAML or its handler module) or ' +
    'added is built beside the live ones from the command log the sink follows (--read-log --follow, as under ' +
    'cqp run beside a log), in a database of its own (DB.rebuild), while the live version goes on being served ' +
    'and updated; it takes the live one\'s place in one transaction once it has caught up. A sink reading ' +
    'stdin rebuilds a redefined view in place, from empty, catching up from the start of a resumable source. ' +
    'A view removed from the file is kept until --drop-removed-views. WAL mode: readers (cqp query) never block it. ' +
    'One writer per database: a second sink on the same --db fails at once, naming the pid that holds it.',
  options: z.object({
    db: z.string().min(1).describe('the SQLite database file (created if missing), e.g. data/views.db'),
    views: z.string().min(1).optional().describe('a views file (YAML) defining the tables; without it, one `events` table'),
    building: z
      .boolean()
      .optional()
      .describe('set by cqp replay: a new database no reader opens before it replaces the target, written without WAL or syncs (it is flushed before the rename)'),
    dropRemovedViews: z
      .boolean()
      .optional()
      .describe('drop the tables of views no longer in the views file (without it they are kept as they stand, no longer updated)'),
  }),
  inProcess: true,
  store: {
    option: 'db',
    locked: true,
    sqlite: true,
    async positions({ db, views }, run) {
      // Loaded when needed (SQLite and the view definitions).
      const [{ loadViewsFile }, { readViewsApplied }] = await Promise.all([import('../views/definition.js'), import('../views/store.js')]);
      // Following a log, changed views are built beside the live ones, which hold the positions it resumes from.
      return readViewsApplied(db, views === undefined ? undefined : loadViewsFile(views), run?.readsLog === true);
    },
    rebuild: {
      // A stale WAL beside the new database would be replayed into it by the next reader.
      companions: ['-wal', '-shm', '-journal'],
      building: 'building',
      async complete(temp) {
        const { detachWal } = await import('../views/store.js');
        detachWal(temp);
      },
    },
  },
  followsLog: true,
  examples: [{ db: 'data/views.db' }, { db: 'data/views.db', views: 'pipelines/views/ice-creams.yaml' }],
  reads: { views: viewsFileRead },
  checks: {
    async views(views, _options, ctx) {
      const { loadViewsFile } = await import('../views/definition.js');
      const { loadHandlers } = await import('../views/store.js');
      await loadHandlers(loadViewsFile(resolve(ctx.cwd, views)));
    },
  },
  async create({ db, views, building, dropRemovedViews }, ctx) {
    // SQLite and the YAML parser load only when a sqlite sink starts, not with every cqp command.
    const { loadViewsFile } = await import('../views/definition.js');
    const { ViewStore } = await import('../views/store.js');
    // Validate the views file before anything touches the database or reads an event.
    const definitions = views === undefined ? undefined : loadViewsFile(resolve(ctx.cwd, views));
    const dbFile = resolve(ctx.cwd, db);
    // Following a log, changed views are built from it beside the live ones; otherwise in place.
    const log = building !== true && ctx.log?.follow === true ? ctx.log.location : undefined;
    const store = await ViewStore.open(dbFile, definitions, { building, beside: log !== undefined, dropRemoved: dropRemovedViews, warn: ctx.warn });
    const rebuild = log === undefined ? undefined : (await import('../views/rebuild.js')).startRebuild(store, { log, warn: ctx.warn, mode: ctx.policy.mode, readInWorker: true });
    return {
      applied: () => store.applied(),
      async write(batch, through) {
        const items = viewEvents(batch, definitions === undefined);
        // An event reported bad in a try rolled back is not reported (dead-lettered) again when the batch is retried.
        const reported = new Set<string>();
        const apply = (): void =>
          store.applyBatch(
            items,
            (index, message) => {
              const e = batch[index];
              // The message names the view: an event bad in two views is reported for each.
              if (e === undefined || reported.has(`${index} ${message}`)) return;
              reported.add(`${index} ${message}`);
              ctx.policy.report(e.no, message, e.text);
            },
            through,
          );
        try {
          apply();
        } catch (error) {
          // A full disk: the build beside the live views gives its space back, and the batch (rolled back) is written again.
          if (!(await rebuild?.giveWay(error))) throw error;
          apply();
        }
      },
      activity: () => rebuild?.activity(),
      async close() {
        try {
          await rebuild?.stop();
        } finally {
          store.close();
        }
      },
    };
  },
});
