// Bench row for the PostgreSQL views (needs the server: POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test;
// skipped with a line saying so when it cannot be reached). Each run writes a fresh schema, dropped afterwards.
import { execFileSync } from 'node:child_process';
import { BIN, NODE, ROOT, bestOf, row, timeShell } from './lib.mjs';

const URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

function sql(statement) {
  execFileSync(NODE, ['--input-type=module', '-e', `import pg from 'pg'; const c = new pg.Client({ connectionString: process.argv[1] }); await c.connect(); await c.query(process.argv[2]); await c.end();`, URL, statement], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
}

export async function bench({ input, events, mb, reps }) {
  try {
    sql('SELECT 1');
  } catch (error) {
    process.stderr.write(`  postgres: skipped, PostgreSQL is not reachable at ${URL} (${String(error.stderr ?? error.message).split('\n')[0]})\n`);
    return;
  }
  const plainSchema = `cqp_bench_plain_${process.pid}`;
  const sinkSchema = `cqp_bench_sink_${process.pid}`;
  const fresh = (schema) => sql(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  try {
    const t = await bestOf(
      {
        plainPg: async () => {
          fresh(plainSchema);
          return timeShell(`"${NODE}" "${ROOT}bench/plain-pg.mjs" "${URL}" "${plainSchema}"`, { input });
        },
        pgSink: async () => {
          fresh(sinkSchema);
          return timeShell(`"${NODE}" "${BIN('cqp-sink')}" postgres --url "${URL}" --schema "${sinkSchema}" --views "${ROOT}bench/views-3col.yaml"`, { input });
        },
      },
      reps,
    );
    row({ what: 'cqp-sink postgres, 3-column view', events, mb, seconds: t.pgSink, baseline: 'plain pg loop (1000-event multi-row upserts)', baselineSeconds: t.plainPg, target: 0.8 });
  } finally {
    fresh(plainSchema);
    fresh(sinkSchema);
  }
}
