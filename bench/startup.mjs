// Bench rows for start-up: a component's process start, as one event through
// `cqp-filter map`, beside a bare `node -e 0`; and `cqp replay` of a 500-event log into the bench view.
// Start-up is short and noisy: each is the best of BENCH_STARTUP_REPS runs (default 5 × BENCH_REPS, at
// least 15), interleaved with its baseline.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NODE, bestOf, figure, timeShell } from './lib.mjs';
import { replayFixture } from './replay.mjs';

export async function bench({ dir, reps }) {
  const runs = Number(process.env.BENCH_STARTUP_REPS ?? Math.max(15, 5 * reps));
  const one = join(dir, 'one-event.ndjson');
  writeFileSync(one, '{"a":1}\n');
  const { replay } = await replayFixture(dir, 'replay-500', 500);
  const t = await bestOf(
    {
      node: () => timeShell(`"${NODE}" -e 0`, { input: one }),
      map: () => timeShell(`"${NODE}" "${BIN('cqp-filter')}" map 'e.b = 1'`, { input: one }),
      replay: () => timeShell(replay),
    },
    runs,
  );
  const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
  const ratio = t.map / t.node;
  figure({ what: 'start-up: one event through cqp-filter map', value: `${ratio.toFixed(2)}× node -e 0 (${ms(t.map)} vs ${ms(t.node)})`, target: '≤ 1.5×', ok: ratio <= 1.5 });
  figure({ what: 'cqp replay, 500 events, 3-column view', value: `${t.replay.toFixed(2)} s (${(t.replay / t.node).toFixed(1)}× node -e 0)`, target: '≤ 0.3 s', ok: t.replay <= 0.3 });
}
