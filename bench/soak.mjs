// Soak: the crash-recovery scenario of test/e2e/run.test.ts, many times over and under load, to catch
// what one run in a quiet test cannot (issue 17: a run that exits 0 with a view behind its log).
//
//   npm run soak -- [--runs 30] [--parallel 2] [--hogs 2] [--keep]
//   taskset -c 0 npm run soak          # everything on one core: the narrowest windows open widest
//
// Each run starts two `cqp run` of the same finite pipeline (demo → 4 stages → log + views following
// the log), kills a middle stage of one with SIGKILL while the source produces, and checks that both
// exit 0, that the two logs are equal, and that each run's views equal views built afresh from its log.
// `--hogs N` starts N niced CPU hogs beside the runs (stopped at the end). Exit 1 when a run failed.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import Database from 'better-sqlite3';
import { BIN, NODE, ROOT } from './lib.mjs';

const VIEWS = join(ROOT, 'pipelines/views/ice-creams.yaml');
const COUNT = 30000;
// Slow enough that the source is still producing when the kill lands, even on a loaded machine.
const RATE = 6000;

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`soak: --${name} expects a whole number, got ${process.argv[at + 1]}`);
    process.exit(2);
  }
  return value;
}

const runs = option('runs', 30);
const parallel = Math.max(1, option('parallel', 2));
const hogCount = option('hogs', 2);
const keep = process.argv.includes('--keep');

const pipeline = (out) => `source: { type: demo, count: ${COUNT}, rate: ${RATE} }
stages:
  - { name: first, filter: map, with: { expr: "e.first = 1" } }
  - { name: middle, filter: map, with: { expr: "e.middle = 1" } }
  - { name: after, filter: map, with: { expr: "e.after = 1" } }
  - { name: last, run: cat }
sinks:
  - { name: log, type: log, path: ${out}/events.log }
  - { name: views, type: sqlite, db: ${out}/views.db, views: ${VIEWS} }
`;

function cqp(args) {
  const r = spawnSync(NODE, [BIN('cqp'), ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function dumpViews(db) {
  const d = new Database(db, { readonly: true });
  try {
    return JSON.stringify(['ice_creams', 'sales'].map((t) => d.prepare(`SELECT * FROM ${t} ORDER BY 1`).all()));
  } finally {
    d.close();
  }
}

/** Views built afresh from a log by a sink reading it to its end. */
function viewsFromLog(log, db) {
  const r = spawnSync(NODE, [BIN('cqp-sink'), 'sqlite', '--db', db, '--views', VIEWS, '--read-log', log], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building views from ${log} failed: ${r.stderr}`);
  return dumpViews(db);
}

function start(file) {
  const child = spawn(NODE, [BIN('cqp'), 'run', file, '--metrics', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (t) => (err += t));
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
  return { child, exit, stderr: () => stripVTControlCharacters(err) };
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

async function status(run) {
  const m = /metrics on http:\/\/([\d.:]+)\//.exec(run.stderr());
  if (!m) return undefined;
  try {
    return await (await fetch(`http://${m[1]}/status`)).json();
  } catch {
    return undefined;
  }
}

/** One scenario; resolves with a list of problems (empty: it passed) and whether the kill landed in time. */
async function scenario(n) {
  const dir = mkdtempSync(join(tmpdir(), `cqp-soak-${n}-`));
  writeFileSync(join(dir, 'clean.yaml'), pipeline('clean'));
  writeFileSync(join(dir, 'crash.yaml'), pipeline('crash'));
  const clean = start(join(dir, 'clean.yaml'));
  const crash = start(join(dir, 'crash.yaml'));
  let ended = false;
  void crash.exit.then(() => (ended = true));
  let killed = false;
  // A kill at a random point of the stream's first half: early, mid-batch, or while the views catch up.
  const killAt = 200 + Math.floor(Math.random() * (COUNT / 2));
  for (; !ended; await pause(20)) {
    const s = await status(crash);
    const logIn = s?.stages.find((x) => x.name === 'log')?.in ?? 0;
    if (logIn > killAt) {
      const pid = s.stages.find((x) => x.name === 'middle')?.pid;
      if (pid) process.kill(pid, 'SIGKILL');
      killed = true;
      break;
    }
  }
  const [crashCode, cleanCode] = await Promise.all([crash.exit, clean.exit]);
  const problems = [];
  const tell = (what, run) => problems.push(`${what}\n    ${run.stderr().trim().split('\n').slice(-8).join('\n    ')}`);
  if (crashCode !== 0) tell(`crash run exited ${crashCode}`, crash);
  if (cleanCode !== 0) tell(`clean run exited ${cleanCode}`, clean);
  const restarted = /middle exited unexpectedly \(signal SIGKILL\)/.test(crash.stderr());
  const logs = {};
  for (const name of ['clean', 'crash']) {
    const r = cqp(['log', 'cat', join(dir, name, 'events.log')]);
    logs[name] = r.stdout;
    const lines = r.stdout === '' ? 0 : r.stdout.split('\n').length - 1;
    if (r.status !== 0 || lines !== COUNT) problems.push(`${name}: the log holds ${lines} events, not ${COUNT} (${r.stderr.trim()})`);
    try {
      const fresh = viewsFromLog(join(dir, name, 'events.log'), join(dir, `${name}-fresh.db`));
      if (dumpViews(join(dir, name, 'views.db')) !== fresh) tell(`${name}: the views differ from views built from its own log (behind it?)`, name === 'crash' ? crash : clean);
    } catch (error) {
      problems.push(`${name}: ${error.message}`);
    }
  }
  if (logs.clean !== logs.crash) problems.push('the crash run logged other events than the clean run');
  if (problems.length === 0 && !keep) rmSync(dir, { recursive: true, force: true });
  else problems.push(`files kept in ${dir}`);
  return { problems, restarted: killed && restarted };
}

const hogs = [];
const stopHogs = () => {
  for (const hog of hogs.splice(0)) hog.kill('SIGKILL');
};
process.on('exit', stopHogs);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
for (let i = 0; i < hogCount; i++) hogs.push(spawn('nice', ['-n', '19', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' }));

let next = 0;
let failed = 0;
let restarts = 0;
const started = Date.now();
async function worker() {
  for (let n = next++; n < runs; n = next++) {
    const t = Date.now();
    const { problems, restarted } = await scenario(n);
    if (restarted) restarts++;
    const took = ((Date.now() - t) / 1000).toFixed(1);
    if (problems.length === 0) {
      console.log(`run ${n + 1}/${runs}: ok (${took} s${restarted ? '' : ', the kill came after the source had ended'})`);
    } else {
      failed++;
      console.log(`run ${n + 1}/${runs}: FAILED (${took} s)\n  ${problems.join('\n  ')}`);
    }
  }
}
await Promise.all(Array.from({ length: parallel }, worker));
stopHogs();
console.log(`soak: ${failed} of ${runs} runs failed; the middle stage was restarted in ${restarts} of ${runs}; ${((Date.now() - started) / 1000).toFixed(0)} s`);
process.exit(failed > 0 ? 1 : 0);
