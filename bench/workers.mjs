// Bench rows for the workers of a group: the whole log (an 8-partition JetStream stream) into fresh
// PostgreSQL views by 1 worker and by 2 workers (`cqp run` with `group:`), beside one `cqp-sink postgres
// --read-log` doing the same work without a group; and the time from the death of a worker to its
// partitions being held again: kill -9 (on one machine, the dead process is seen at once) and SIGSTOP
// (a worker that stops answering, as one on another machine that died: its leases must lapse).
// Needs NATS with JetStream (BENCH_NATS, default 127.0.0.1:4222) and PostgreSQL (POSTGRES_URL);
// skipped with a line without them. BENCH_WORKERS_EVENTS (default 100000) sets the log's length.
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import pg from 'pg';
import { BIN, NODE, ROOT, figure, head, row, timeShell } from './lib.mjs';

const URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const PARTITIONS = 8;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A `cqp run` of the worker pipeline, with its /status address once it prints it. */
function startWorker(file, dir) {
  const child = spawn(NODE, [BIN('cqp'), 'run', file, '--metrics', '127.0.0.1:0'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exit = new Promise((resolve) => child.on('close', resolve));
  const status = async () => {
    const m = /metrics on http:\/\/([\d.:]+)\//.exec(err);
    if (!m) return undefined;
    return (await fetch(`http://${m[1]}/status`)).json();
  };
  return { child, exit, status, stderr: () => err };
}

/** Every process of a worker: its cqp run and the components it started. */
function tree(pid) {
  const out = [pid];
  const text = execFileSync('ps', ['-e', '-o', 'pid=,ppid=']).toString();
  const pairs = text.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  for (let i = 0; i < out.length; i++) for (const [p, pp] of pairs) if (pp === out[i]) out.push(p);
  return out;
}

export async function bench({ input, events, dir }) {
  const servers = process.env.BENCH_NATS ?? '127.0.0.1:4222';
  let nc;
  const db = new pg.Client({ connectionString: URL });
  try {
    nc = await connect({ servers, timeout: 2000 });
    await db.connect();
  } catch (error) {
    process.stderr.write(`  workers: skipped, needs NATS on ${servers} and PostgreSQL at ${URL} (${error.message})\n`);
    await nc?.close();
    return;
  }
  const jsm = await jetstreamManager(nc);
  const stream = `cqp_bench_workers_${process.pid}`;
  const log = `nats://${servers}/${stream}`;
  const schemas = [];
  const workers = [];
  try {
    const file = join(dir, 'workers.ndjson');
    const count = await head(input, file, Math.min(events, Number(process.env.BENCH_WORKERS_EVENTS ?? 100_000)));
    await timeShell(`"${NODE}" "${BIN('cqp-sink')}" log --path ${log} --partitions ${PARTITIONS}`, { input: file });
    const last = new Map();
    for (let k = 0; k < PARTITIONS; k++) {
      const m = await jsm.streams.getMessage(stream, { last_by_subj: `cqp.${stream}.${k}` }).catch(() => null);
      if (m) last.set(k, m.seq);
    }
    const logId = /id=([0-9a-f]+)/.exec((await jsm.streams.info(stream)).config.description)[1];
    /** True once the views of `schema` hold every partition to its end. */
    const caughtUp = async (schema) => {
      const rows = (await db.query(`SELECT source, n FROM "${schema}".cqp_positions WHERE view = 'ice_creams'`).catch(() => ({ rows: [] }))).rows;
      const at = new Map(rows.map((r) => [r.source, Number(r.n)]));
      return [...last].every(([k, seq]) => (at.get(`log:${logId}/p${k}`) ?? 0) >= seq);
    };
    const pipeline = (schema) => {
      const path = join(dir, `${schema}.yaml`);
      writeFileSync(
        path,
        `name: worker\nsource: { type: log, path: "${log}", group: bench }\nsinks:\n  - { name: views, type: postgres, url: "${URL}", schema: ${schema}, views: "${ROOT}bench/views-3col.yaml" }\n`,
      );
      return path;
    };
    const fresh = async (name) => {
      const schema = `cqp_bench_${name}_${process.pid}`;
      schemas.push(schema);
      await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      return schema;
    };
    /** Seconds for `n` workers to bring fresh views to the log's end. */
    const run = async (n) => {
      const schema = await fresh(`w${n}`);
      const path = pipeline(schema);
      const started = process.hrtime.bigint();
      const ws = Array.from({ length: n }, () => startWorker(path, dir));
      workers.push(...ws);
      while (!(await caughtUp(schema))) await sleep(50);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      return { seconds, ws };
    };
    const single = await fresh('readlog');
    const readLog = await timeShell(`"${NODE}" "${BIN('cqp-sink')}" postgres --url "${URL}" --schema ${single} --views "${ROOT}bench/views-3col.yaml" --read-log ${log}`);
    const one = await run(1);
    for (const w of one.ws) w.child.kill('SIGTERM');
    await Promise.all(one.ws.map((w) => w.exit));
    const two = await run(2);
    row({ what: `1 worker (cqp run, group), ${PARTITIONS} partitions → fresh views`, events: count, seconds: one.seconds, baseline: 'cqp-sink postgres --read-log (no group)', baselineSeconds: readLog });
    row({ what: `2 workers (cqp run, group), ${PARTITIONS} partitions → fresh views`, events: count, seconds: two.seconds, baseline: '1 worker', baselineSeconds: one.seconds });

    // Failover: with both workers holding their shares, one dies; the time until the other holds all.
    const held = async (w) => (await w.status().catch(() => undefined))?.partitions?.length ?? 0;
    const failover = async (victim, survivor, signal) => {
      while ((await held(victim)) === 0 || (await held(survivor)) === 0) await sleep(100);
      const started = Date.now();
      for (const pid of tree(victim.child.pid)) process.kill(pid, signal);
      while ((await held(survivor)) < PARTITIONS) await sleep(50);
      return (Date.now() - started) / 1000;
    };
    const [a, b] = two.ws;
    const killed = await failover(a, b, 'SIGKILL');
    const c = startWorker(pipeline(schemas.at(-1)), dir);
    workers.push(c);
    const stopped = await failover(c, b, 'SIGSTOP');
    for (const pid of tree(c.child.pid)) process.kill(pid, 'SIGKILL');
    figure({ what: 'worker failover: kill -9 → its partitions held again', value: `${killed.toFixed(1)} s`, target: '< 10 s', ok: killed < 10 });
    figure({ what: 'worker failover: SIGSTOP (lease lapses) → held again', value: `${stopped.toFixed(1)} s`, target: '< 10 s', ok: stopped < 10 });
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => Promise.race([w.exit, sleep(20_000)])));
    await jsm.streams.delete(stream).catch(() => undefined);
    for (const s of schemas) await db.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`).catch(() => undefined);
    await db.end();
    await nc.close();
  }
}
