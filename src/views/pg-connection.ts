/**
 * Connections to PostgreSQL for the postgres sink, `cqp query postgres://…` and replay: the URL said
 * without its password, a clear error when the server cannot be reached, numbers read back exactly,
 * and the one-writer-per-schema lock (a session advisory lock, held as long as its connection lives).
 */
import { hostname } from 'node:os';
import pg from 'pg';
import type { Client } from 'pg';
import { CqpError, messageOf } from '../core/errors.js';
import { LosslessNumber, parseJson } from '../core/json.js';

export type PgClient = Client;

/** True when `text` names a PostgreSQL database (`postgres://…` or `postgresql://…`). */
export function isPostgresUrl(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text);
}

/** The URL as messages show it: never its password. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}

/** An SQL identifier, quoted. */
export function q(identifier: string): string {
  return `"${identifier.replace(/"/g, '""')}"`;
}

/** Integers and decimals read back exactly: a bigint or numeric beyond a double's precision stays as its digits. */
function exactNumber(text: string): number | LosslessNumber {
  const n = Number(text);
  return Number.isSafeInteger(n) || (String(n) === text && !/^-?\d+$/.test(text)) ? n : new LosslessNumber(text);
}

const TYPE_PARSERS: Record<number, (text: string) => unknown> = {
  20: exactNumber, // int8
  1700: exactNumber, // numeric
  114: (t) => parseJson(t), // json
  3802: (t) => parseJson(t), // jsonb
};

const types = {
  getTypeParser(oid: number, format?: string): (text: string) => unknown {
    return TYPE_PARSERS[oid] ?? (pg.types.getTypeParser(oid, (format ?? 'text') as 'text') as (text: string) => unknown);
  },
};

/** Errors that say the connection was lost or the server is going away, not that the SQL was wrong. */
export function isConnectionError(error: unknown): boolean {
  // A failed (re)connection: what `connect` threw for it.
  if (error instanceof CqpError) return error.code === 'IO' && error.cause !== undefined && isConnectionError(error.cause);
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (/^(08|57P0[1-3]|53300)/.test(code)) return true;
    if (/^E[A-Z]+$/.test(code)) return true; // ECONNREFUSED, ECONNRESET, EPIPE, ETIMEDOUT…
    return false;
  }
  const message = messageOf(error);
  return /Connection terminated|connection (is )?closed|Client has encountered a connection error|not queryable|timeout/i.test(message);
}

/** The name the connection shows in pg_stat_activity: who holds a schema's lock. */
export function applicationName(role: string): string {
  return `cqp ${role} ${hostname()} pid ${process.pid}`.slice(0, 63);
}

/** Opens a connection; a server that cannot be reached is a CqpError naming the URL and what to check. */
export async function connect(url: string, role: string, onLost?: (error: Error) => void): Promise<PgClient> {
  const client = new pg.Client({ connectionString: url, application_name: applicationName(role), types, connectionTimeoutMillis: 10_000, keepAlive: true });
  client.on('error', (error) => onLost?.(error));
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => undefined);
    throw new CqpError('IO', `cannot connect to PostgreSQL at ${describeUrl(url)}: ${messageOf(error) || String((error as { code?: unknown }).code)} (is the server running and the URL right?)`, {
      cause: error,
    });
  }
  return client;
}

/** Closes a connection, ignoring a connection that is already gone. */
export async function disconnect(client: PgClient | undefined): Promise<void> {
  if (client === undefined) return;
  await client.end().catch(() => undefined);
}

/** The advisory lock key of a schema's writer. */
export function lockKey(schema: string): string {
  return `cqp-views:${schema}`;
}

/**
 * Runs `setup` (creating the schema's tables, building views) while holding the schema's setup lock:
 * writers that share a schema (a group's workers) starting together build it once, one after another.
 */
export async function withSetupLock<T>(client: PgClient, schema: string, setup: () => Promise<T>): Promise<T> {
  const key = `cqp-views-setup:${schema}`;
  await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [key]);
  try {
    return await setup();
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).catch(() => undefined);
  }
}

interface Holder {
  pid: number;
  application_name: string | null;
}

async function holderOf(client: PgClient, schema: string): Promise<Holder | undefined> {
  const result = await client.query<Holder>(
    `SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid, (SELECT hashtextextended($1, 0) AS k) key
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = ((key.k >> 32) & 4294967295)::oid AND l.objid = (key.k & 4294967295)::oid AND a.pid <> pg_backend_pid()`,
    [lockKey(schema)],
  );
  return result.rows[0];
}

/**
 * Takes the writer lock of `schema` on this connection (held until it closes). Another holder is
 * refused with a LOCKED error naming it, except this process's own earlier connection (lost under it,
 * its session not ended yet on the server), which is ended so the lock passes to the new one.
 */
export async function lockSchema(client: PgClient, url: string, schema: string, shared = false): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const take = shared ? 'pg_try_advisory_lock_shared' : 'pg_try_advisory_lock';
    const got = await client.query<{ ok: boolean }>(`SELECT ${take}(hashtextextended($1, 0)) AS ok`, [lockKey(schema)]);
    if (got.rows[0]?.ok === true) return;
    const holder = await holderOf(client, schema);
    const mine = holder?.application_name?.endsWith(` ${hostname()} pid ${process.pid}`) === true;
    if (mine && !shared && attempt < 5 && holder) {
      await client.query('SELECT pg_terminate_backend($1)', [holder.pid]);
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    if (holder === undefined && attempt < 5) continue; // released in between
    const who = holder ? `${holder.application_name || 'another client'} (server pid ${holder.pid})` : 'another client';
    if (shared) {
      throw new CqpError('LOCKED', `PostgreSQL ${describeUrl(url)}, schema "${schema}": ${who} holds it alone (a replay rebuilding it?); the workers of a group write it together once it is done`);
    }
    throw new CqpError(
      'LOCKED',
      `PostgreSQL ${describeUrl(url)}, schema "${schema}": ${who} is writing it; one writer per schema at a time (stop that one, or give this one another --schema)`,
    );
  }
}
