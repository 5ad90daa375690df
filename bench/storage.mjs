// Bench rows for the command log and the SQLite views.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE, ROOT, bestOf, row, timeShell } from './lib.mjs';

export async function bench({ input, events, mb, dir, reps }) {
  const log = join(dir, 'bench.log');
  const db = join(dir, 'bench.db');
  const plainDb = join(dir, 'plain.db');
  const fresh = (...files) => {
    for (const f of files) for (const suffix of ['', '-wal', '-shm', '.idx', '.lock']) rmSync(f + suffix, { force: true });
  };
  const t = await bestOf(
    {
      plain: () => timeShell(`"${NODE}" "${ROOT}bench/plain-loop.mjs"`, { input }),
      logSink: async () => {
        fresh(log);
        return timeShell(`"${NODE}" "${BIN('cqp-sink')}" log --path "${log}"`, { input });
      },
      logCat: () => timeShell(`"${NODE}" "${BIN('cqp')}" log cat "${log}"`),
      plainSqlite: async () => {
        fresh(plainDb);
        return timeShell(`"${NODE}" "${ROOT}bench/plain-sqlite.mjs" "${plainDb}"`, { input });
      },
      sqliteSink: async () => {
        fresh(db);
        return timeShell(`"${NODE}" "${BIN('cqp-sink')}" sqlite --db "${db}" --views "${ROOT}bench/views-3col.yaml"`, { input });
      },
    },
    reps,
  );
  row({ what: 'cqp-sink log (fsync batch)', events, mb, seconds: t.logSink, baseline: 'plain Node loop', baselineSeconds: t.plain, target: 0.7 });
  row({ what: 'cqp log cat', events, mb, seconds: t.logCat, baseline: 'plain Node loop', baselineSeconds: t.plain, target: 3.0 });
  row({ what: 'cqp-sink sqlite, 3-column view', events, mb, seconds: t.sqliteSink, baseline: 'plain better-sqlite3 loop', baselineSeconds: t.plainSqlite, target: 0.8 });
}
