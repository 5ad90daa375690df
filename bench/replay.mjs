// Bench row for cqp replay (DESIGN §10): N events from a command log into the 3-column view, beside the
// plain better-sqlite3 loop over the same events as NDJSON. BENCH_REPLAY_EVENTS (default 1000000) sets N.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE, ROOT, bestOf, fileMB, row, timeShell, writeEvents } from './lib.mjs';

const EVENTS = Number(process.env.BENCH_REPLAY_EVENTS ?? 1_000_000);

export async function bench({ dir, reps }) {
  const input = join(dir, 'replay-events.ndjson');
  const log = join(dir, 'replay.log');
  const db = join(dir, 'replay-views.db');
  const plainDb = join(dir, 'replay-plain.db');
  const pipeline = join(dir, 'replay-3col.yaml');
  process.stderr.write(`  replay: writing ${EVENTS} events and their log\n`);
  await writeEvents(input, EVENTS);
  for (const suffix of ['', '.idx', '.lock']) rmSync(log + suffix, { force: true });
  await timeShell(`"${NODE}" "${BIN('cqp-sink')}" log --path "${log}" --fsync never`, { input });
  writeFileSync(
    pipeline,
    `name: replay-bench\nsource: { type: stdin }\nsinks:\n  - { name: views, type: sqlite, db: "${db}", views: "${ROOT}bench/views-3col.yaml" }\n`,
  );
  const fresh = (file) => {
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  };
  const t = await bestOf(
    {
      plainSqlite: async () => {
        fresh(plainDb);
        return timeShell(`"${NODE}" "${ROOT}bench/plain-sqlite.mjs" "${plainDb}"`, { input });
      },
      replay: () => timeShell(`"${NODE}" "${BIN('cqp')}" replay --log "${log}" --pipeline "${pipeline}"`),
    },
    reps,
  );
  row({ what: 'cqp replay, 3-column view', events: EVENTS, mb: fileMB(input), seconds: t.replay, baseline: 'plain better-sqlite3 loop', baselineSeconds: t.plainSqlite, target: 0.8 });
  rmSync(input, { force: true });
}
