// Bench row for the command log on JetStream: `cqp-sink log --path nats://…` beside a plain Node loop
// publishing the same lines with the same client (bench/plain-nats.mjs). Needs a NATS server with
// JetStream on BENCH_NATS (default 127.0.0.1:4222); without one the row is skipped with a line.
import { Socket } from 'node:net';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { BIN, NODE, ROOT, bestOf, fileMB, head, row, timeShell } from './lib.mjs';

function reachable(host, port) {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => done(false));
    s.once('error', () => done(false));
    s.connect(port, host, () => done(true));
  });
}

export async function bench({ input, events, dir, reps }) {
  const servers = process.env.BENCH_NATS ?? '127.0.0.1:4222';
  const [host, port] = servers.split(':');
  if (!(await reachable(host, Number(port)))) {
    process.stderr.write(`  JetStream rows skipped: no NATS server on ${servers}\n`);
    return;
  }
  const count = await head(input, join(dir, 'js.ndjson'), Math.min(events, Number(process.env.BENCH_JS_EVENTS ?? 100_000)));
  const jsInput = join(dir, 'js.ndjson');
  const mb = fileMB(jsInput);
  const nc = await connect({ servers });
  const jsm = await jetstreamManager(nc);
  const made = [];
  const fresh = (prefix) => {
    const name = `cqp_bench_${prefix}_${process.pid}_${made.length}`;
    made.push(name);
    return name;
  };
  try {
    const t = await bestOf(
      {
        plainNats: () => timeShell(`"${NODE}" "${ROOT}bench/plain-nats.mjs" ${servers} ${fresh('plain')}`, { input: jsInput }),
        jsSink: () => timeShell(`"${NODE}" "${BIN('cqp-sink')}" log --path nats://${servers}/${fresh('sink')}`, { input: jsInput }),
      },
      reps,
    );
    row({ what: 'cqp-sink log --path nats://… (JetStream)', events: count, mb, seconds: t.jsSink, baseline: 'plain NATS publish loop', baselineSeconds: t.plainNats, target: 0.7 });
  } finally {
    for (const name of made) await jsm.streams.delete(name).catch(() => undefined);
    await nc.close();
  }
}
