// Bench rows for `cqp run`: throughput against shell pipes, hot reload, latency, memory.
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, openSync, readFileSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, NODE, ROOT, bestOf, figure, fileMB, row, timeShell, writeEvents } from './lib.mjs';

const VIEWS = `${ROOT}bench/views-3col.yaml`;
const MAP = "e.payload.total = (e.payload.price || 0) * 2";

function pipelineYaml({ source, stages, sinks }) {
  return `name: bench\nsource: ${source}\nstages:\n${stages.map((s) => `  - ${s}\n`).join('')}sinks:\n${sinks.map((s) => `  - ${s}\n`).join('')}`;
}

const threeFilters = ['{ name: validate, filter: validate }', '{ name: enrich, filter: enrich }', `{ name: map, filter: map, with: { expr: "${MAP}" } }`];

/** Starts `cqp run FILE` with a metrics endpoint; resolves the child, its /status URL and a done promise. */
async function startRun(file, extraEnv = {}) {
  const child = spawn(NODE, [BIN('cqp'), 'run', file, '--metrics', '127.0.0.1:0', '--status-interval', '3600'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...extraEnv } });
  let stderr = '';
  const address = new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      const m = /metrics on http:\/\/([^/\s]+)\/metrics/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on('close', (code) => reject(new Error(`cqp run exited ${code} before serving metrics:\n${stderr}`)));
  });
  const done = new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  return { child, status: `http://${await address}/status`, done, stderr: () => stderr };
}

async function status(url) {
  const res = await fetch(url);
  return res.json();
}

export async function bench({ input, events, mb, dir, reps }) {
  const out = join(dir, 'run');
  mkdirSync(out, { recursive: true });
  const fresh = () => {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
  };

  // 1. Throughput: cqp run (3 filters + log + sqlite views) against the same programs joined by shell pipes,
  //    on a long stream (BENCH_RUN_EVENTS, default 1M) and on the bench's own (where cqp run's start-up,
  //    its supervisor first, about 0.2 s of one core, weighs more).
  const throughput = async (file, count, baselines) => {
    const runFile = join(dir, `run-${count}.yaml`);
    writeFileSync(runFile, pipelineYaml({ source: `{ type: file, path: "${file}" }`, stages: threeFilters, sinks: [`{ name: log, type: log, path: "${out}/events.log" }`, `{ name: views, type: sqlite, db: "${out}/views.db", views: "${VIEWS}" }`] }));
    const f = (args) => `"${NODE}" "${BIN('cqp-filter')}" ${args}`;
    // Two shell baselines: the same topology as cqp run (the views follow the log: the sqlite sink reads
    // the log itself, ending at the last event), and one that tees the stages' output into the sqlite sink.
    const src = `"${NODE}" "${BIN('cqp-source')}" file --path "${file}" | ${f('validate')} | ${f('enrich')} | ${f(`map '${MAP}'`)}`;
    const sqliteSink = (db) => `"${NODE}" "${BIN('cqp-sink')}" sqlite --db "${out}/${db}" --views "${VIEWS}"`;
    const logSink = (log) => `"${NODE}" "${BIN('cqp-sink')}" log --path "${log}"`;
    const shell = {
      follow: [`${src} | ${logSink(`${out}/pipe.log`)} & ${sqliteSink('pipe.db')} --read-log "${out}/pipe.log" --follow --until ${count}; wait`, `${out}/pipe.log`],
      tee: [`${src} | tee >(${sqliteSink('tee.db')}) | ${logSink(`${out}/tee.log`)}; wait`, `${out}/tee.log`],
    };
    // Each timed from start to end, and from the first event logged to the end (the rate once every
    // process has started).
    const timed = async (command, log) => {
      const started = Date.now();
      const seconds = await timeShell(command);
      const first = Date.parse(/first seq\s+\d+\s+(\S+)/.exec(execFileSync(NODE, [BIN('cqp'), 'log', 'stat', log], { encoding: 'utf8' }))?.[1] ?? '');
      return { seconds, running: seconds - (first - started) / 1000 };
    };
    const commands = { run: () => timed(`"${NODE}" "${BIN('cqp')}" run "${runFile}" --status-interval 3600`, `${out}/events.log`) };
    for (const name of baselines) commands[name] = () => timed(...shell[name]);
    return bestOf(commands, reps, fresh);
  };
  const longEvents = Number(process.env.BENCH_RUN_EVENTS ?? 1_000_000);
  const longInput = join(dir, 'run-events.ndjson');
  process.stderr.write(`  cqp run: writing ${longEvents} events\n`);
  await writeEvents(longInput, longEvents);
  const long = await throughput(longInput, longEvents, ['follow']);
  const longMb = fileMB(longInput);
  rmSync(longInput);
  row({ what: 'cqp run: 3 filters + log + sqlite', events: longEvents, mb: longMb, seconds: long.run.seconds, baseline: 'shell pipes, views following the log', baselineSeconds: long.follow.seconds, target: 1.0 });
  const t = await throughput(input, events, ['follow', 'tee']);
  row({ what: 'cqp run: 3 filters + log + sqlite', events, mb, seconds: t.run.seconds, baseline: 'shell pipes, views following the log', baselineSeconds: t.follow.seconds });
  row({ what: 'cqp run: 3 filters + log + sqlite', events, mb, seconds: t.run.seconds, baseline: 'shell pipes, views teed from the stages', baselineSeconds: t.tee.seconds });
  row({ what: 'cqp run, from the first event logged', events, mb, seconds: t.run.running, baseline: 'shell pipes, views following the log, same', baselineSeconds: t.follow.running });

  // 2. Hot reload: the time from saving a changed stage to the first event through the new version,
  //    and throughput across 5 reloads against none.
  const live = join(dir, 'live.yaml');
  const liveOut = join(out, 'live.ndjson');
  const liveYaml = (v) => pipelineYaml({ source: '{ type: demo, count: 0, rate: 5000 }', stages: [`{ name: tag, filter: map, with: { expr: "e.v = ${v}" } }`], sinks: [`{ name: out, type: file, path: "${liveOut}" }`] });
  fresh();
  writeFileSync(live, liveYaml(1));
  const running = await startRun(live);
  await sleep(1500);
  const pauses = [];
  for (let v = 2; v <= 4; v++) {
    const offset = statSync(liveOut).size;
    const saved = Date.now();
    writeFileSync(live, liveYaml(v));
    let seen = false;
    while (!seen && Date.now() - saved < 10_000) {
      await sleep(10);
      const size = statSync(liveOut).size;
      const fd = openSync(liveOut, 'r');
      const buf = Buffer.alloc(size - offset);
      readSync(fd, buf, 0, buf.length, offset);
      closeSync(fd);
      seen = buf.includes(`"v":${v}`);
    }
    pauses.push(Date.now() - saved);
    await sleep(500);
  }
  running.child.kill('SIGTERM');
  await running.done;
  const worst = Math.max(...pauses);
  figure({ what: 'hot reload: save → first event through the new stage', value: `${pauses.join(', ')} ms`, target: '< 1000 ms', ok: worst < 1000 });

  const reloadFile = join(dir, 'reload.yaml');
  const reloadYaml = (v) => pipelineYaml({ source: `{ type: file, path: "${input}" }`, stages: [...threeFilters, `{ name: tag, filter: map, with: { expr: "e.v = ${v}" } }`], sinks: [`{ name: log, type: log, path: "${out}/events.log" }`] });
  const runTimed = async (reloads) => {
    fresh();
    writeFileSync(reloadFile, reloadYaml(0));
    const started = process.hrtime.bigint();
    const r = await startRun(reloadFile);
    if (reloads > 0) {
      // Spread the reloads over the expected run time.
      const step = Math.max(200, (events / 60_000) * 1000 / (reloads + 1));
      for (let v = 1; v <= reloads; v++) {
        await sleep(step);
        writeFileSync(reloadFile, reloadYaml(v));
      }
    }
    const { code, stderr } = await r.done;
    if (code !== 0) throw new Error(`cqp run with reloads exited ${code}:\n${stderr}`);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const applied = (stderr.match(/reload #\d+: /g) ?? []).length;
    return { seconds, applied };
  };
  let without = Infinity;
  let withReloads = Infinity;
  let applied = 0;
  for (let i = 0; i < reps; i++) {
    without = Math.min(without, (await runTimed(0)).seconds);
    const r = await runTimed(5);
    withReloads = Math.min(withReloads, r.seconds);
    applied = Math.max(applied, r.applied);
  }
  row({ what: `cqp run across ${applied} reloads`, events, mb, seconds: withReloads, baseline: 'the same run without reloads', baselineSeconds: without, target: 0.8 });

  // 3. Latency at 1,000 events/s: a writer appends timestamped events to a followed file; the time from the
  //    append to the event's arrival in the sink's output file.
  fresh();
  const feed = join(out, 'feed.ndjson');
  const sinkFile = join(out, 'latency.ndjson');
  writeFileSync(feed, '');
  const latFile = join(dir, 'latency.yaml');
  writeFileSync(latFile, pipelineYaml({ source: `{ type: file, path: "${feed}", follow: true }`, stages: threeFilters, sinks: [`{ name: out, type: file, path: "${sinkFile}" }`] }));
  const lat = await startRun(latFile);
  await sleep(1000);
  const seconds = 10;
  const sent = new Map();
  let n = 0;
  const startedAt = Date.now();
  const latencies = [];
  let readOffset = 0;
  let pending = '';
  const collect = () => {
    let size = 0;
    try {
      size = statSync(sinkFile).size;
    } catch {
      return;
    }
    if (size <= readOffset) return;
    const fd = openSync(sinkFile, 'r');
    const buf = Buffer.alloc(size - readOffset);
    readSync(fd, buf, 0, buf.length, readOffset);
    closeSync(fd);
    readOffset = size;
    const now = performance.now();
    const text = pending + buf.toString('utf8');
    const lines = text.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) {
      const id = /"n":(\d+)/.exec(l)?.[1];
      const at = id === undefined ? undefined : sent.get(Number(id));
      if (at !== undefined) latencies.push(now - at);
    }
  };
  while (Date.now() - startedAt < seconds * 1000) {
    const due = Math.floor(((Date.now() - startedAt) / 1000) * 1000);
    const lines = [];
    for (; n < due; n++) {
      lines.push(JSON.stringify({ header: { eventId: `events/${n}`, eventType: ['create'], eventName: ['create.ice_cream'], createdTimestamp: new Date().toISOString(), rel: { id: `r${n % 100}`, schemaVersion: '/s/1' } }, payload: { price: 1 }, n }));
      sent.set(n, performance.now());
    }
    if (lines.length) appendFileSync(feed, `${lines.join('\n')}\n`);
    collect();
    await sleep(2);
  }
  for (let i = 0; i < 100 && latencies.length < n; i++) {
    await sleep(10);
    collect();
  }
  lat.child.kill('SIGTERM');
  await lat.done;
  latencies.sort((a, b) => a - b);
  const p = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  figure({ what: `latency at 1,000 events/s (${latencies.length}/${n} events, 3 filters)`, value: `p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms`, target: 'p99 < 50 ms', ok: p(0.99) < 50 && latencies.length === n });

  // 4. Memory: peak RSS per stage on a long stream (BENCH_MEMORY_MB, default 1024), and a slow sink throttling
  //    the source (the demo source runs as fast as it is read).
  const memoryMb = Number(process.env.BENCH_MEMORY_MB ?? 1024);
  const memEvents = Math.round((memoryMb * 1e6) / 400);
  const memFile = join(dir, 'memory.yaml');
  fresh();
  writeFileSync(memFile, pipelineYaml({ source: `{ type: demo, count: ${memEvents} }`, stages: threeFilters, sinks: [`{ name: log, type: log, path: "${out}/events.log", fsync: never }`] }));
  const mem = await startRun(memFile);
  const peaks = new Map();
  const sampleRss = async () => {
    try {
      const s = await status(mem.status);
      for (const st of s.stages) {
        if (!st.pid) continue;
        const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${st.pid}/status`, 'utf8'))?.[1] ?? 0);
        peaks.set(st.name, Math.max(peaks.get(st.name) ?? 0, kb / 1024));
      }
    } catch {
      // The run ended between the status and the read.
    }
  };
  let finished = false;
  mem.done.then(() => (finished = true));
  while (!finished) {
    await sampleRss();
    await sleep(500);
  }
  const worstStage = [...peaks].sort((a, b) => b[1] - a[1])[0] ?? ['-', 0];
  figure({ what: `peak RSS per stage, ${memoryMb} MB stream`, value: `max ${worstStage[1].toFixed(0)} MB (${worstStage[0]}); ${[...peaks].map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`, target: '< 150 MB', ok: worstStage[1] < 150 });

  fresh();
  const slowFile = join(dir, 'slow.yaml');
  writeFileSync(slowFile, pipelineYaml({ source: '{ type: demo, count: 0 }', stages: [`{ name: slow, run: ["${NODE}", "${ROOT}bench/slow-stage.mjs"] }`], sinks: [`{ name: out, type: file, path: "${out}/slow.ndjson" }`] }));
  const slow = await startRun(slowFile);
  await sleep(5000);
  const s = await status(slow.status);
  const sourceOut = s.stages.find((x) => x.name === 'source')?.out ?? 0;
  const slowIn = s.stages.find((x) => x.name === 'slow')?.in ?? 0;
  const supervisorRss = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${slow.child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  slow.child.kill('SIGTERM');
  await slow.done;
  figure({ what: 'slow stage (10k events/s) throttles a demo source', value: `source sent ${sourceOut}, stage took ${slowIn} in 5 s; supervisor peak RSS ${supervisorRss.toFixed(0)} MB`, target: 'source bounded', ok: sourceOut < slowIn + 200_000 && supervisorRss < 150 });
}
