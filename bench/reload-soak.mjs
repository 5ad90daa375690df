// Reload soak: a `cqp run` at a high event rate whose pipeline file is saved every 100-300 ms with a
// random new version (stages reordered, changed, added, removed, kept ones between changed ones; a
// `run: cat` among them), then SIGTERM. Checks the log: every demo event once, in order, and each
// event's path (each stage appends its name and version) exactly the stages of one saved version.
//
//   node bench/reload-soak.mjs [--saves 40] [--runs 1] [--kill]    (--kill: kill -9 a stage now and then)
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, NODE } from './lib.mjs';

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at < 0 ? fallback : Number(process.argv[at + 1]);
}
const saves = option('saves', 40);
const runs = option('runs', 1);
const kill = process.argv.includes('--kill');

const NAMES = ['a', 'b', 'c', 'd', 'e'];

function stageLine(name, version) {
  if (name === 'e') return `  - { name: e, run: cat }`;
  return `  - { name: ${name}, filter: map, with: { expr: "e.path = (e.path ?? '') + '${name}${version};'" } }`;
}

/** A random next version: reorder, change some versions, add or remove a stage. */
function mutate(cur) {
  let next = cur.map((s) => ({ ...s }));
  const r = Math.random();
  if (r < 0.3 && next.length > 1) {
    const i = Math.floor(Math.random() * next.length);
    const j = Math.floor(Math.random() * next.length);
    [next[i], next[j]] = [next[j], next[i]];
  }
  for (const s of next) if (s.name !== 'e' && Math.random() < 0.3) s.version++;
  if (Math.random() < 0.2 && next.length > 2) next.splice(Math.floor(Math.random() * next.length), 1);
  if (Math.random() < 0.2) {
    const missing = NAMES.filter((n) => !next.some((s) => s.name === n));
    if (missing.length > 0) next.splice(Math.floor(Math.random() * (next.length + 1)), 0, { name: missing[0], version: 1 + Math.floor(Math.random() * 50) });
  }
  return next;
}

const pathOf = (stages) => stages.filter((s) => s.name !== 'e').map((s) => `${s.name}${s.version};`).join('');

async function once(runNo) {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-reload-soak-'));
  const file = join(dir, 'p.yaml');
  const write = (stages) =>
    writeFileSync(file, `source: { type: demo, count: 0, rate: 20000 }\nstages:\n${stages.map((s) => stageLine(s.name, s.version)).join('\n')}\nsinks:\n  - { name: log, type: log, path: events.log }\n`);
  let cur = [{ name: 'a', version: 1 }, { name: 'b', version: 1 }, { name: 'c', version: 1 }, { name: 'e', version: 1 }, { name: 'd', version: 1 }];
  const allowed = new Set([pathOf(cur)]);
  const saved = [pathOf(cur)];
  write(cur);
  const child = spawn(NODE, [BIN('cqp'), 'run', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  await sleep(2000);
  for (let i = 0; i < saves; i++) {
    cur = mutate(cur);
    allowed.add(pathOf(cur));
    saved.push(pathOf(cur));
    write(cur);
    await sleep(100 + Math.random() * 200);
    if (kill && Math.random() < 0.15) {
      const ps = spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      const victim = ps[Math.floor(Math.random() * ps.length)];
      if (victim) spawnSync('kill', ['-9', victim]);
    }
  }
  await sleep(3000);
  child.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(90_000).then(() => 'timeout')]);
  writeFileSync(join(dir, "stderr.txt"), stderr);
  const problems = [];
  if (code !== 0) problems.push(`exit ${code}`);
  const cat = spawnSync(NODE, [BIN('cqp'), 'log', 'cat', join(dir, 'events.log')], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const events = cat.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const ids = spawnSync(NODE, [BIN('cqp'), 'source', 'demo', '--count', String(events.length)], { encoding: 'utf8', maxBuffer: 1 << 30 })
    .stdout.trim().split('\n').map((l) => JSON.parse(l).header.eventId);
  let idBad = 0;
  for (let i = 0; i < events.length; i++) if (events[i].header.eventId !== ids[i]) { if (idBad++ < 3) problems.push(`event ${i}: ${events[i].header.eventId}, expected ${ids[i]}`); }
  const seen = new Map();
  for (const e of events) if (!allowed.has(e.path)) seen.set(e.path, (seen.get(e.path) ?? 0) + 1);
  for (const [p, n] of [...seen].slice(0, 5)) problems.push(`${n} events with path ${p} (no saved version)`);
  // Versions must switch together and never go back: the path's version index is non-decreasing.
  let last = 0, back = 0;
  for (const e of events) {
    const k = saved.findIndex((p, i) => i >= last && p === e.path);
    if (k >= 0) last = k;
    else if (allowed.has(e.path)) back++;
  }
  if (back) problems.push(`${back} events went back to an earlier pipeline version`);
  const reloads = (stderr.match(/reload #\d+: /g) ?? []).length;
  const refused = (stderr.match(/refused/g) ?? []).length;
  console.log(`run ${runNo}: ${events.length} events, ${reloads} reloads, ${refused} refused, exit ${code} ${problems.length ? 'FAIL' : 'ok'} (${dir})`);
  for (const p of problems) console.log(`  ${p}`);
  if (problems.length) console.log(stderr.split('\n').filter((l) => !/reload #\d+: /.test(l)).slice(-15).join('\n'));
  return problems.length === 0;
}

let failed = 0;
for (let r = 1; r <= runs; r++) if (!(await once(r))) failed++;
process.exit(failed ? 1 : 0);
