// Shared bench machinery: timing commands (best of N, interleaved), and the table.
import { spawn, spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream, openSync, closeSync, statSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const NODE = process.execPath;
export const BIN = (name) => `${ROOT}bin/${name}.js`;

/** Runs a shell command with stdin from a file (or nothing) and stdout to /dev/null; returns seconds. */
export function timeShell(command, { input, env } = {}) {
  return new Promise((resolve, reject) => {
    const stdin = input ? openSync(input, 'r') : 'ignore';
    const devnull = openSync('/dev/null', 'w');
    const started = process.hrtime.bigint();
    const child = spawn('bash', ['-o', 'pipefail', '-c', command], { stdio: [stdin, devnull, 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      if (typeof stdin === 'number') closeSync(stdin);
      closeSync(devnull);
      if (code !== 0) reject(new Error(`bench command failed (${code}): ${command}\n${stderr}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e9);
    });
  });
}

/**
 * Best time of `reps` runs of each named command, run interleaved so machine noise hits all alike. A
 * command may return several timings as an object: the best of each is kept.
 */
export async function bestOf(commands, reps, prepare) {
  const best = {};
  const min = (a, b) => (a === undefined ? b : typeof b === 'number' ? Math.min(a, b) : Object.fromEntries(Object.entries(b).map(([k, v]) => [k, Math.min(a[k], v)])));
  for (let r = 0; r < reps; r++) {
    for (const [name, run] of Object.entries(commands)) {
      if (prepare) await prepare(name);
      best[name] = min(best[name], await run());
    }
  }
  return best;
}

/** Writes `count` seed-shaped events as NDJSON, a chunk at a time (a million do not fit one string). */
export async function writeEvents(path, count) {
  const { demoEvents } = await import('../dist/sources/demo.js');
  const fd = openSync(path, 'w');
  const next = demoEvents(1, 2000);
  try {
    for (let done = 0; done < count; ) {
      const lines = [];
      for (let i = 0; i < 10_000 && done < count; i++, done++) lines.push(JSON.stringify(next()));
      writeSync(fd, `${lines.join('\n')}\n`);
    }
  } finally {
    closeSync(fd);
  }
}

export function has(command) {
  return spawnSync('bash', ['-c', `command -v ${command}`]).status === 0;
}

export function fileMB(path) {
  return statSync(path).size / 1e6;
}

const rows = [];

/** Adds a table row: a measured command beside its baseline, with its target. */
export function row({ what, events, mb, seconds, baseline, baselineSeconds, target }) {
  const ratio = baselineSeconds / seconds;
  rows.push({
    what,
    'events/s': Math.round(events / seconds).toLocaleString('en-US'),
    'MB/s': mb ? (mb / seconds).toFixed(1) : '',
    baseline,
    'baseline events/s': Math.round(events / baselineSeconds).toLocaleString('en-US'),
    ratio: `${ratio.toFixed(2)}×`,
    target: target ? `≥ ${target}×` : '',
    ok: target ? (ratio >= target ? 'yes' : 'NO') : '',
  });
  process.stderr.write(`  ${what}: ${ratio.toFixed(2)}× ${baseline}\n`);
}

/**
 * A row that is a figure rather than a ratio (latency, pause, memory, start-up): `baseline` names what
 * it is measured beside, if anything, and `baselineValue` is that one's figure.
 */
export function figure({ what, value, target, ok, baseline = '', baselineValue = '' }) {
  rows.push({ what, 'events/s': '', 'MB/s': '', baseline, 'baseline events/s': baselineValue, ratio: value, target, ok: ok === undefined ? '' : ok ? 'yes' : 'NO' });
  process.stderr.write(`  ${what}: ${value}${baseline ? ` (${baseline}: ${baselineValue})` : ''}\n`);
}

/** Prints the table as Markdown. */
export function printTable() {
  const cols = ['what', 'events/s', 'MB/s', 'baseline', 'baseline events/s', 'ratio', 'target', 'ok'];
  const width = Object.fromEntries(cols.map((c) => [c, Math.max(c.length, ...rows.map((r) => String(r[c]).length))]));
  const line = (cells) => `| ${cols.map((c) => String(cells[c]).padEnd(width[c])).join(' | ')} |`;
  console.log(line(Object.fromEntries(cols.map((c) => [c, c]))));
  console.log(`| ${cols.map((c) => '-'.repeat(width[c])).join(' | ')} |`);
  for (const r of rows) console.log(line(r));
}

/** The first `count` lines of `from`, in a file of their own. */
export async function head(from, to, count) {
  const out = createWriteStream(to);
  let n = 0;
  for await (const line of createInterface({ input: createReadStream(from), crlfDelay: Infinity })) {
    if (n++ >= count) break;
    if (!out.write(`${line}\n`)) await new Promise((r) => out.once('drain', r));
  }
  await new Promise((r) => out.end(r));
  return Math.min(n, count);
}
