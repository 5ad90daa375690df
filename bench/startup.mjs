// Bench rows for start-up, each beside its baseline, run interleaved with it in the same run:
// - a component's process start, as one event through `cqp-filter map`, beside a bare `node -e 0`;
// - `cqp replay` of a 500-event log into the bench view (a figure: at most 0.3 s), beside `node -e 0`;
// - `cqp replay` of BENCH_SHORT_REPLAY_EVENTS (default 200,000) into that view, start-up included,
//   beside the plain better-sqlite3 loop over the same events (replay.mjs), where start-up weighs more
//   than in the long replay.
// Start-up is short and noisy, and the machine's load moves between runs: the first two run
// BENCH_STARTUP_REPS rounds (default 5 × BENCH_REPS, at least 15), each round `node -e 0`, the map and
// the replay one after the other; the ratio is the median of the rounds' ratios, and the times beside
// it are medians and bests. The short replay is the best of BENCH_REPS, as the other replay rows.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE, figure, timeShell } from './lib.mjs';
import { replayFixture, replayRow } from './replay.mjs';

const SHORT = Number(process.env.BENCH_SHORT_REPLAY_EVENTS ?? 200_000);

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

/** The times of `runs` rounds, each running every command once in turn: `{ name: [seconds, …] }`. */
async function rounds(commands, runs) {
  const times = Object.fromEntries(Object.keys(commands).map((name) => [name, []]));
  for (let r = 0; r < runs; r++) for (const [name, run] of Object.entries(commands)) times[name].push(await run());
  return times;
}

export async function bench(context) {
  const { dir, reps } = context;
  const runs = Number(process.env.BENCH_STARTUP_REPS ?? Math.max(15, 5 * reps));
  const one = join(dir, 'one-event.ndjson');
  writeFileSync(one, '{"a":1}\n');
  const { replay } = await replayFixture(dir, 'replay-500', 500);
  const t = await rounds(
    {
      node: () => timeShell(`"${NODE}" -e 0`, { input: one }),
      map: () => timeShell(`"${NODE}" "${BIN('cqp-filter')}" map 'e.b = 1'`, { input: one }),
      replay: () => timeShell(replay),
    },
    runs,
  );
  const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
  const times = (name) => `median ${ms(median(t[name]))}, best ${ms(Math.min(...t[name]))}`;
  const ratio = (name) => median(t[name].map((s, r) => s / t.node[r]));
  figure({
    what: 'start-up: one event through cqp-filter map',
    baseline: 'node -e 0',
    baselineValue: times('node'),
    value: `${ratio('map').toFixed(2)}× node -e 0 (${times('map')})`,
    target: '≤ 1.5×',
    ok: ratio('map') <= 1.5,
  });
  figure({
    what: 'cqp replay, 500 events, 3-column view',
    baseline: 'node -e 0',
    baselineValue: times('node'),
    value: `${(median(t.replay) * 1000).toFixed(0)} ms median (best ${ms(Math.min(...t.replay))}, ${ratio('replay').toFixed(1)}× node -e 0)`,
    target: '≤ 0.3 s',
    ok: median(t.replay) <= 0.3,
  });
  await replayRow(context, 'replay-short', SHORT, 0.8, 'start-up included');
}
