// Bench rows for cqp replay: N events from a command log into the 3-column view (a
// 4-column table: the key and 3 columns), beside the plain better-sqlite3 loop over the same events as
// NDJSON. Both are timed as whole commands, start-up included. BENCH_REPLAY_EVENTS (default 1000000)
// events here; the short replay's row, where start-up weighs more, is among the start-up rows (startup.mjs).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE, ROOT, bestOf, fileMB, row, timeShell, writeEvents } from './lib.mjs';

const LONG = Number(process.env.BENCH_REPLAY_EVENTS ?? 1_000_000);

/** Writes `events` events as NDJSON and as a command log, and a pipeline whose one sink is the view. */
export async function replayFixture(dir, name, events) {
  const input = join(dir, `${name}.ndjson`);
  const log = join(dir, `${name}.log`);
  const db = join(dir, `${name}-views.db`);
  const pipeline = join(dir, `${name}.yaml`);
  await writeEvents(input, events);
  for (const suffix of ['', '.idx', '.lock']) rmSync(log + suffix, { force: true });
  await timeShell(`"${NODE}" "${BIN('cqp-sink')}" log --path "${log}" --fsync never`, { input });
  writeFileSync(pipeline, `name: replay-bench\nsource: { type: stdin }\nsinks:\n  - { name: views, type: sqlite, db: "${db}", views: "${ROOT}bench/views-3col.yaml" }\n`);
  return { input, replay: `"${NODE}" "${BIN('cqp')}" replay --log "${log}" --pipeline "${pipeline}"` };
}

/** Times `cqp replay` of `events` events beside the plain loop, best of `reps`, and adds the row. */
export async function replayRow({ dir, reps }, name, events, target, note) {
  process.stderr.write(`  replay: writing ${events} events and their log\n`);
  const { input, replay } = await replayFixture(dir, name, events);
  const plainDb = join(dir, `${name}-plain.db`);
  const t = await bestOf(
    {
      plainSqlite: async () => {
        for (const suffix of ['', '-wal', '-shm']) rmSync(plainDb + suffix, { force: true });
        return timeShell(`"${NODE}" "${ROOT}bench/plain-sqlite.mjs" "${plainDb}"`, { input });
      },
      replay: () => timeShell(replay),
    },
    reps,
  );
  row({ what: `cqp replay, ${events.toLocaleString('en-US')} events, 3-column view${note ? `, ${note}` : ''}`, events, mb: fileMB(input), seconds: t.replay, baseline: 'plain better-sqlite3 loop', baselineSeconds: t.plainSqlite, target });
  rmSync(input, { force: true });
}

export async function bench(context) {
  await replayRow(context, 'replay', LONG, 0.8);
}
