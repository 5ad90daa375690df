// Bench rows for `cqp tap`: a pipeline's throughput with one tap attached, against none. The events come
// on the pipeline's stdin, fed only once the tap listens, and each run is timed from the first byte fed
// to the pipeline's exit (the source then ends, the stages drain).
import { spawn } from 'node:child_process';
import { createReadStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, NODE, bestOf, row } from './lib.mjs';

const MAP = 'e.payload.total = (e.payload.price || 0) * 2';

/** One `cqp run` of `file` on `input` through stdin, with a tap (its arguments) or none; resolves seconds. */
async function timedRun(file, input, tapArgs) {
  const run = spawn(NODE, [BIN('cqp'), 'run', file, '--metrics', '127.0.0.1:0', '--status-interval', '3600'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  const address = await new Promise((resolve, reject) => {
    run.stderr.on('data', (d) => {
      stderr += d;
      const m = /metrics on http:\/\/([^/\s]+)\/metrics/.exec(stderr);
      if (m) resolve(m[1]);
    });
    run.on('close', (code) => reject(new Error(`cqp run exited ${code} before serving metrics:\n${stderr}`)));
  });
  const done = new Promise((resolve) => run.on('close', resolve));
  let tap;
  let tapped = 0;
  if (tapArgs) {
    tap = spawn(NODE, [BIN('cqp'), 'tap', '--url', `http://${address}`, ...tapArgs], { stdio: ['ignore', 'pipe', 'ignore'] });
    tap.stdout.on('data', (d) => (tapped += d.length));
  }
  // Every process started and the tap connected (its request reached the supervisor).
  await sleep(1500);
  const started = process.hrtime.bigint();
  createReadStream(input).pipe(run.stdin);
  const code = await done;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  tap?.kill('SIGINT');
  if (code !== 0) throw new Error(`cqp run exited ${code}:\n${stderr}`);
  if (tap && tapped === 0) throw new Error('the tap printed nothing');
  return seconds;
}

export async function bench({ input, events, mb, dir, reps }) {
  const file = join(dir, 'tapped.yaml');
  writeFileSync(
    file,
    `name: tapped\nsource: { type: stdin }\nstages:\n  - { name: validate, filter: validate }\n  - { name: enrich, filter: enrich }\n` +
      `  - { name: map, filter: map, with: { expr: "${MAP}" } }\nsinks:\n  - { name: out, type: file, path: "${join(dir, 'tapped.ndjson')}" }\n`,
  );
  const t = await bestOf(
    {
      none: () => timedRun(file, input, undefined),
      tap: () => timedRun(file, input, ['--outputs-of', 'map']),
      all: () => timedRun(file, input, ['--outputs-of', 'map', '--limit', '1000000000']),
    },
    reps,
  );
  row({ what: 'cqp run, 3 filters, one tap (--outputs-of map)', events, mb, seconds: t.tap, baseline: 'the same, no tap', baselineSeconds: t.none, target: 0.9 });
  row({ what: 'cqp run, 3 filters, one tap of every event', events, mb, seconds: t.all, baseline: 'the same, no tap', baselineSeconds: t.none });
}
