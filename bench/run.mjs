// npm run bench: cqp's throughput beside baselines measured in the same run.
// BENCH_EVENTS (default 300000) sets the stream length (BENCH_RUN_EVENTS, default 1000000, cqp run's long
// stream; BENCH_REPLAY_EVENTS the long replay's, BENCH_SHORT_REPLAY_EVENTS the start-up section's); BENCH_REPS (default 3) the
// runs per command (BENCH_STARTUP_REPS those of the start-up rows);
// BENCH_ONLY (e.g. "pipeline,replay") picks sections: filters, storage, jetstream, postgres, workers, sources, pipeline, tap, replay, startup,
// view-change (BENCH_VIEW_CHANGE_EVENTS, default 1000000, the log's length before a view changes).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, NODE, ROOT, bestOf, fileMB, has, printTable, row, timeShell } from './lib.mjs';
import { demoEvents } from '../dist/sources/demo.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 300_000);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECTIONS = ['filters', 'storage', 'jetstream', 'postgres', 'workers', 'sources', 'pipeline', 'tap', 'replay', 'startup', 'view-change'];
const ONLY = process.env.BENCH_ONLY ? process.env.BENCH_ONLY.split(',').map((s) => s.trim()) : SECTIONS;
const unknown = ONLY.filter((s) => !SECTIONS.includes(s));
if (unknown.length > 0) {
  process.stderr.write(`cqp bench: BENCH_ONLY: unknown section ${unknown.join(', ')} (sections: ${SECTIONS.join(', ')})\n`);
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), 'cqp-bench-'));
const input = join(dir, 'events.ndjson');

process.stderr.write(`cqp bench: ${EVENTS} seed-shaped events, best of ${REPS} runs each, in ${dir}\n`);
const next = demoEvents(1, 2000);
const lines = [];
for (let i = 0; i < EVENTS; i++) lines.push(JSON.stringify(next()));
writeFileSync(input, `${lines.join('\n')}\n`);
lines.length = 0;
const mb = fileMB(input);
process.stderr.write(`  input: ${mb.toFixed(1)} MB, ${(mb * 1e6 / EVENTS).toFixed(0)} bytes an event\n`);

const plain = `"${NODE}" "${ROOT}bench/plain-loop.mjs"`;
const filter = (args) => `"${NODE}" "${BIN('cqp-filter')}" ${args}`;

const filters = {
  plain: () => timeShell(plain, { input }),
  map: () => timeShell(filter(`map 'e.total = e.payload.price * 2'`), { input }),
  enrich: () => timeShell(filter('enrich'), { input }),
  where: () => timeShell(filter(`where 'e.payload.price > 5'`), { input }),
  validate: () => timeShell(filter('validate'), { input }),
  pipe3: () => timeShell(`${filter('validate')} | ${filter('enrich')} | ${filter(`map 'e.total = e.payload.price * 2'`)}`, { input }),
  plain3: () => timeShell(`${plain} | ${plain} | ${plain}`, { input }),
};
if (has('jq')) filters.jq = () => timeShell('jq -c .', { input });
if (ONLY.includes('filters')) {
  const t = await bestOf(filters, REPS);
  for (const [name, target] of [['map', 1.0], ['enrich', 1.0], ['where', 1.3], ['validate', undefined]]) {
    row({ what: `cqp-filter ${name}`, events: EVENTS, mb, seconds: t[name], baseline: 'plain Node loop', baselineSeconds: t.plain, target });
    if (t.jq && (name === 'map' || name === 'enrich')) {
      row({ what: `cqp-filter ${name}`, events: EVENTS, mb, seconds: t[name], baseline: 'jq -c .', baselineSeconds: t.jq, target: 2.0 });
    }
  }
  row({ what: 'validate | enrich | map (shell pipe)', events: EVENTS, mb, seconds: t.pipe3, baseline: '3 plain loops piped', baselineSeconds: t.plain3 });
}

const context = { input, events: EVENTS, mb, dir, reps: REPS };
for (const section of SECTIONS.slice(1).filter((s) => ONLY.includes(s))) {
  const { bench } = await import(`./${section}.mjs`);
  await bench(context);
}

printTable();
