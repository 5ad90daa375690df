/**
 * Blue/green for PostgreSQL views (`cqp replay`): the sink builds the views into a new schema,
 * `<schema>_replay_<pid>`, while the replay holds the target schema's writer lock; at the end one
 * transaction renames the old schema away, the new one into its place, and drops the old. A replay that
 * fails or is killed leaves the target schema untouched; the next replay drops what it left (a leftover
 * whose writer lock nobody holds).
 */
import type { StoreSwap } from '../core/component.js';
import { CqpError } from '../core/errors.js';
import { connect, describeUrl, disconnect, lockKey, lockSchema, q, type PgClient } from './pg-connection.js';

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** The swap of `schema` at `url`; `option` is the sink's option naming the schema. */
export async function schemaSwap(url: string, schema: string, option: string): Promise<StoreSwap> {
  const temp = `${schema}_replay_${process.pid}`;
  const where = `PostgreSQL ${describeUrl(url)}`;
  if (schema === 'public') {
    // The swap replaces the whole schema: every other table in it would go with the old views.
    throw new CqpError('CONFIG', `${where}: a replay rebuilds a schema whole and swaps it in, and schema "public" usually holds other tables; give the views a schema of their own (${option}: NAME)`);
  }
  let client: PgClient | undefined;
  const open = async (): Promise<PgClient> => (client ??= await connect(url, 'replay'));
  const schemaExists = async (c: PgClient, name: string): Promise<boolean> =>
    (await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [name])).rowCount === 1;
  return {
    target: `${where}, schema "${schema}"`,
    temp: `schema "${temp}"`,
    option,
    value: temp,
    async clearLeftovers() {
      const c = await open();
      const pattern = new RegExp(`^${schema}_replay_(\\d+)$`);
      const found = await c.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE $1 ESCAPE '\\'", [`${escapeLike(schema)}\\_replay\\_%`]);
      const removed: string[] = [];
      for (const { name } of found.rows) {
        if (!pattern.test(name) || name === temp) continue;
        // A leftover whose writer still holds its lock is being built by a replay that runs.
        const free = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok', [lockKey(name)]);
        if (free.rows[0]?.ok !== true) {
          throw new CqpError('LOCKED', `${where}: another replay is building schema "${name}" for schema "${schema}"; wait for it to finish, or stop it and run this replay again`);
        }
        try {
          await c.query(`DROP SCHEMA IF EXISTS ${q(name)} CASCADE`);
        } finally {
          await c.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [lockKey(name)]);
        }
        removed.push(`${where}, schema "${name}"`);
      }
      await c.query(`DROP SCHEMA IF EXISTS ${q(temp)} CASCADE`);
      return removed;
    },
    async lock() {
      await lockSchema(await open(), url, schema);
    },
    async commit() {
      const c = await open();
      if (!(await schemaExists(c, temp))) throw new CqpError('IO', `${where}: the sink did not create schema "${temp}"; schema "${schema}" is unchanged`);
      const old = `${schema}_old_${process.pid}`;
      await c.query('BEGIN');
      try {
        const had = await schemaExists(c, schema);
        if (had) await c.query(`ALTER SCHEMA ${q(schema)} RENAME TO ${q(old)}`);
        await c.query(`ALTER SCHEMA ${q(temp)} RENAME TO ${q(schema)}`);
        if (had) await c.query(`DROP SCHEMA ${q(old)} CASCADE`);
        await c.query('COMMIT');
      } catch (error) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw new CqpError('IO', `${where}: cannot swap schema "${temp}" in for schema "${schema}" (${(error as Error).message}); schema "${schema}" is unchanged`, { cause: error });
      }
    },
    async discard() {
      const c = await open();
      await c.query(`DROP SCHEMA IF EXISTS ${q(temp)} CASCADE`);
    },
    async release() {
      const c = client;
      client = undefined;
      await disconnect(c);
    },
  };
}
