import { resolve } from 'node:path';
import * as z from 'zod';
import { defineSink } from '../core/component.js';
import { viewEvents } from '../views/view-events.js';
import { viewsFileRead } from '../views/views-file.js';

const schemaOption = z
  .string()
  .min(1)
  .superRefine((s, ctx) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(s)) ctx.addIssue({ code: 'custom', message: `schema "${s}" is not an SQL identifier (use letters, digits and _, not starting with a digit)` });
    else if (s.length > 48) ctx.addIssue({ code: 'custom', message: `schema "${s}" is longer than 48 characters` });
    else if (/^pg_/i.test(s)) ctx.addIssue({ code: 'custom', message: `schema "${s}" is reserved (names starting with pg_ belong to PostgreSQL)` });
  })
  .optional()
  // A schema is a name, not a file: `schema` is otherwise a path option.
  .meta({ path: false, description: 'the PostgreSQL schema holding the views (created if missing; default cqp)' });

/** Views get a schema of their own by default: a replay swaps the whole schema in, so it must hold nothing else. */
const DEFAULT_SCHEMA = 'cqp';

export default defineSink({
  name: 'postgres',
  summary: 'maintain PostgreSQL query views from events (exactly once)',
  description:
    'The same views file as the sqlite sink (--views FILE: tables, columns from dot paths, upsert, insert, delete, ' +
    'increment, or a handler module, which gets a PostgreSQL SQL helper with $1 parameters and promises); without ' +
    '--views, a table `events` (seq, event_id, type, entity_key, time, body jsonb). Each batch is written set-based ' +
    '(one multi-row upsert per shape) and committed in one transaction with the positions of its events, so every ' +
    'view applies each event exactly once across crashes and reconnections. Column types: integer is bigint ' +
    '(exact to 2^63-1), real double precision, json jsonb, boolean boolean, text and untyped columns text. ' +
    'One writer per schema: a second sink on the same schema fails at once, naming the holder; the workers of a ' +
    'group (--group) write one schema together, and a batch of a partition another worker has taken over since is ' +
    'rolled back (fenced). A server that ' +
    'cannot be reached is an error at start; while running, a lost connection is retried with backoff and ' +
    'nothing is acknowledged before it is committed. A view redefined (or added beside live views) is built ' +
    'beside the live one from the command log the sink follows (--read-log --follow, as under cqp run beside a log): ' +
    'a columns view in a table named cqp_next_<table> in the same schema, a handler view in schema <schema>_cqp_next; ' +
    'the live version goes on being served and updated, and one transaction moves the new one into place once it has ' +
    'caught up. Otherwise (reading stdin, a worker of a group) a redefined view is rebuilt in place, from empty. A view ' +
    'removed from the file is kept until --drop-removed-views.',
  options: z.object({
    url: z.string().min(1).regex(/^postgres(ql)?:\/\//i, 'expected a URL like postgres://user@host:5432/database').describe('the database, e.g. postgres://postgres@127.0.0.1:5432/test'),
    views: z.string().min(1).optional().describe('a views file (YAML) defining the tables; without it, one `events` table'),
    schema: schemaOption,
    group: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'a group name is letters, digits, _ and - only')
      .optional()
      .describe('the group of workers writing this schema together, each for the partitions it holds (cqp run sets it for a group worker)'),
    dropRemovedViews: z
      .boolean()
      .optional()
      .describe('drop the tables of views no longer in the views file (without it they are kept as they stand, no longer updated)'),
  }),
  store: {
    option: 'url',
    sharedBy: 'group',
    async positions({ url, views, schema, group }, run) {
      const [{ loadViewsFile }, { readPgViewsApplied }] = await Promise.all([import('../views/definition.js'), import('../views/pg-store.js')]);
      // Following a log, changed views are built beside the live ones, which hold the positions it resumes from.
      return readPgViewsApplied(url, schema ?? DEFAULT_SCHEMA, views === undefined ? undefined : loadViewsFile(views), run?.readsLog === true && group === undefined);
    },
    rebuild: {
      async swap({ url, schema }) {
        const { schemaSwap } = await import('../views/pg-swap.js');
        return schemaSwap(url, schema ?? DEFAULT_SCHEMA, 'schema');
      },
    },
  },
  followsLog: true,
  examples: [
    { url: 'postgres://postgres@127.0.0.1:5432/test' },
    { url: 'postgres://postgres@127.0.0.1:5432/test', views: 'pipelines/views/ice-creams.yaml', schema: 'shop' },
  ],
  reads: { views: viewsFileRead },
  checks: {
    async views(views, _options, ctx) {
      const { loadViewsFile } = await import('../views/definition.js');
      const { loadHandlers } = await import('../views/store.js');
      await loadHandlers(loadViewsFile(resolve(ctx.cwd, views)));
    },
  },
  async create({ url, views, schema, group, dropRemovedViews }, ctx) {
    const { loadViewsFile } = await import('../views/definition.js');
    const { PgViewStore } = await import('../views/pg-store.js');
    // Validate the views file before anything touches the database or reads an event.
    const definitions = views === undefined ? undefined : loadViewsFile(resolve(ctx.cwd, views));
    // Following a log alone, changed views are built from it beside the live ones. The workers of a group
    // each hold some partitions of the log: none of them could build a version holding all of it.
    const follows = ctx.log?.follow === true ? ctx.log.location : undefined;
    const log = group === undefined ? follows : undefined;
    const inPlaceWhy = follows !== undefined && group !== undefined ? `the workers of group ${group} each apply only the partitions they hold, so none builds a new version beside the live one` : undefined;
    const store = await PgViewStore.open({ url, schema: schema ?? DEFAULT_SCHEMA, views: definitions, warn: ctx.warn, signal: ctx.signal, group, beside: log !== undefined, inPlaceWhy, dropRemoved: dropRemovedViews });
    const rebuild = log === undefined ? undefined : (await import('../views/rebuild.js')).startRebuild(store, { log, warn: ctx.warn, mode: ctx.policy.mode, readInWorker: true });
    return {
      applied: () => store.applied(),
      async write(batch, through) {
        const items = viewEvents(batch, definitions === undefined);
        await store.applyBatch(
          items,
          (index, message) => {
            const e = batch[index];
            if (e) ctx.policy.report(e.no, message, e.text);
          },
          through,
        );
      },
      activity: () => rebuild?.activity(),
      async close() {
        try {
          await rebuild?.stop();
        } finally {
          await store.close();
        }
      },
    };
  },
});
