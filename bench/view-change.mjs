// Bench rows for changing a view: a sqlite sink following a command log of BENCH_VIEW_CHANGE_EVENTS
// (default 1000000) events restarts with one view redefined (a column added). The new version is built
// from the log beside the live one while the live stream catches up on BENCH_VIEW_CHANGE_LIVE (default
// 200000) events appended since; timed: the live stream's catching up beside the build against the same
// without a change, and the time until the new version is swapped in.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { BIN, NODE, ROOT, figure, row } from './lib.mjs';

const BASE = Number(process.env.BENCH_VIEW_CHANGE_EVENTS ?? 1_000_000);
const LIVE = Number(process.env.BENCH_VIEW_CHANGE_LIVE ?? 200_000);

function sh(command, cwd) {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`bench command failed: ${command}\n${r.stderr}`);
}

/** The position a view of `db` holds (0 when not yet readable). */
function position(db, view) {
  try {
    const d = new Database(db, { readonly: true });
    try {
      return Number(d.prepare('SELECT n FROM cqp_positions WHERE view = ?').pluck().get(view) ?? 0);
    } finally {
      d.close();
    }
  } catch {
    return 0;
  }
}

/**
 * Starts the sink on a copy of the built database with `views`; resolves the seconds until the live
 * `sales` view holds the whole log and, when a view changed, until the swap.
 */
async function timedSink(dir, views, total) {
  const db = join(dir, 'run.db');
  for (const f of ['run.db', 'run.db-wal', 'run.db-shm', 'run.db.rebuild', 'run.db.rebuild-wal', 'run.db.rebuild-shm']) rmSync(join(dir, f), { force: true });
  copyFileSync(join(dir, 'built.db'), db);
  const started = process.hrtime.bigint();
  const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
  const sink = spawn(NODE, [BIN('cqp-sink'), 'sqlite', '--db', db, '--views', views, '--read-log', join(dir, 'events.log'), '--follow'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let swapped;
  sink.stderr.on('data', (d) => {
    stderr += d;
    if (swapped === undefined && stderr.includes('swapped in the new version')) swapped = seconds();
  });
  const closed = new Promise((resolve) => sink.on('close', resolve));
  let live;
  const changed = views.endsWith('changed.yaml');
  while (live === undefined || (changed && swapped === undefined)) {
    if (sink.exitCode !== null) throw new Error(`the sink exited:\n${stderr}`);
    if (live === undefined && position(db, 'sales') >= total) live = seconds();
    await sleep(20);
  }
  sink.kill('SIGTERM');
  await closed;
  return { live, swapped };
}

export async function bench({ reps, dir: benchDir }) {
  const dir = join(benchDir, 'view-change');
  rmSync(dir, { recursive: true, force: true });
  sh(`mkdir -p ${dir}`);
  const views = join(dir, 'views.yaml');
  const changed = join(dir, 'changed.yaml');
  const example = readFileSync(join(ROOT, 'pipelines/views/ice-creams.yaml'), 'utf8');
  writeFileSync(views, example);
  writeFileSync(changed, example.replace('      sold: { type: integer }', '      sold: { type: integer }\n      price_again: { path: payload.price, type: real }'));
  copyFileSync(join(ROOT, 'pipelines/views/flavor-counts.mjs'), join(dir, 'flavor-counts.mjs'));
  const source = `"${NODE}" "${BIN('cqp-source')}" demo`;
  const logSink = `"${NODE}" "${BIN('cqp-sink')}" log --path events.log --fsync never`;
  process.stderr.write(`  view change: a log of ${BASE} events, the views built from it, then ${LIVE} more appended\n`);
  sh(`${source} --count ${BASE} | ${logSink}`, dir);
  sh(`"${NODE}" "${BIN('cqp-sink')}" sqlite --db built.db --views views.yaml --read-log events.log`, dir);
  sh(`${source} --count ${LIVE} --seed 2 | ${logSink}`, dir);
  const total = BASE + LIVE;
  let same;
  let change;
  // A first run unmeasured: the log and the database are then read from the page cache in every measured run.
  await timedSink(dir, views, total);
  for (let r = 0; r < reps; r++) {
    const a = await timedSink(dir, views, total);
    const b = await timedSink(dir, changed, total);
    same = same === undefined || a.live < same.live ? a : same;
    change = change === undefined || b.swapped < change.swapped ? b : change;
  }
  row({
    what: `sqlite sink, live stream while a view is rebuilt from ${BASE} events beside it`,
    events: LIVE,
    seconds: change.live,
    baseline: 'the same, no view changed',
    baselineSeconds: same.live,
    target: 0.7,
  });
  figure({ what: `view change on a ${BASE}-event log: time until the new version is swapped in`, value: `${change.swapped.toFixed(1)} s`, target: '' });
  rmSync(dir, { recursive: true, force: true });
}
