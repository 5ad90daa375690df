// Bench rows for the real-stream sources: file --follow and kinesis.
import { spawn } from 'node:child_process';
import { BIN, NODE, bestOf, row, timeShell } from './lib.mjs';
import { benchKinesis } from './kinesis.mjs';

/** Seconds until `cqp-source file --follow` has printed `lines` lines (it never ends by itself). */
function timeFollow(path, lines) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(NODE, [BIN('cqp-source'), 'file', '--path', path, '--follow'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let seen = 0;
    child.stdout.on('data', (chunk) => {
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) seen++;
      if (seen === lines) {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        child.kill('SIGTERM');
        resolve(seconds);
      }
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (seen < lines) reject(new Error(`cqp-source file --follow exited ${code} after ${seen} of ${lines} lines`));
    });
  });
}

export async function bench({ input, events, mb, reps }) {
  const t = await bestOf(
    {
      plainRead: () => timeShell(`"${NODE}" "${BIN('cqp-source')}" file --path "${input}"`),
      follow: () => timeFollow(input, events),
    },
    reps,
  );
  row({ what: 'cqp-source file --follow', events, mb, seconds: t.follow, baseline: 'cqp-source file (no follow)', baselineSeconds: t.plainRead, target: 0.8 });

  const kinesisEvents = Math.min(events, 50_000);
  for (const r of await benchKinesis({ events: kinesisEvents })) {
    row({ what: 'cqp-source kinesis (4 shards)', events: kinesisEvents, seconds: kinesisEvents / r.eventsPerSec, baseline: 'raw SDK GetRecords loop, kinesalite', baselineSeconds: kinesisEvents / r.baselineEventsPerSec });
  }
}
