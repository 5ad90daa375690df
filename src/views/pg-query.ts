/**
 * `cqp query postgres://… "SQL"`: one statement in a read-only transaction (the session read-only too,
 * and the extended protocol, which takes a single statement, so no `COMMIT; …` can leave it), printed as
 * `cqp query` prints a SQLite database's rows.
 */
import { CqpError, messageOf } from '../core/errors.js';
import { connect, describeUrl, disconnect } from './pg-connection.js';
import { printRows, type QueryOptions, type QueryOutput } from './query.js';

/** PostgreSQL's codes for a write refused by a read-only transaction, and for SQL it rejects. */
const READ_ONLY = '25006';

export async function runPgQuery(url: string, sql: string, options: QueryOptions, out: QueryOutput): Promise<number> {
  const where = describeUrl(url);
  const readOnlyUrl = new URL(url);
  readOnlyUrl.searchParams.set('options', '-c default_transaction_read_only=on');
  const client = await connect(readOnlyUrl.toString(), 'query');
  try {
    await client.query('BEGIN TRANSACTION READ ONLY');
    let result;
    try {
      result = await client.query({ text: sql, rowMode: 'array', queryMode: 'extended' } as unknown as { text: string; rowMode: 'array' });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === READ_ONLY) {
        throw new CqpError('USAGE', `cqp query ${where}: the query writes (${messageOf(error)}); cqp query runs read-only, so only queries that read can run here`, { cause: error });
      }
      if (code === '42601' && /multiple commands/i.test(messageOf(error))) {
        throw new CqpError('USAGE', `cqp query ${where}: give one statement (${messageOf(error)})`, { cause: error });
      }
      throw new CqpError('USAGE', `cqp query ${where}: PostgreSQL rejects the query: ${messageOf(error)}`, { cause: error });
    }
    const columns = result.fields.map((f) => f.name);
    const code = await printRows(columns, result.rows as unknown[][], options, out);
    await client.query('ROLLBACK').catch(() => undefined);
    return code;
  } finally {
    await disconnect(client);
  }
}
