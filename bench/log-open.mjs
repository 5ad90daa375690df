// Time to open a command log of 1M demo events for appending: with its index (what the writer
// verifies before the first append) and without it (a full scan). Usage: node bench/log-open.mjs [DIR]
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const { openLogWriter } = await import('../dist/log/writer.js');
const { demoEvents } = await import('../dist/sources/demo.js');
const dir = process.argv[2] ?? '/tmp/cqp-bench-log-open';
const COUNT = 1_000_000;
mkdirSync(dir, { recursive: true });
const path = join(dir, 'events.log');
const opts = { fsync: 'never', warn: (m) => console.error(m) };

if (!existsSync(path)) {
  const w = await openLogWriter(path, opts);
  const next = demoEvents(1, 2000);
  for (let done = 0; done < COUNT; ) {
    const items = [];
    for (let i = 0; i < 5000 && done < COUNT; i++, done++) items.push({ bytes: JSON.stringify(next()) });
    await w.appendBatch(items);
  }
  await w.close();
  copyFileSync(`${path}.idx`, join(dir, 'index.saved'));
}

// Wall time, and CPU time (which a machine shared with other work disturbs less).
async function timeOpen() {
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  const w = await openLogWriter(path, opts);
  const used = process.cpuUsage(cpu);
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  if (w.lastSeq !== COUNT) throw new Error(`lastSeq ${w.lastSeq}`);
  await w.close();
  return { wall, cpu: (used.user + used.system) / 1e6 };
}

const min = (a, b) => ({ wall: Math.min(a.wall, b.wall), cpu: Math.min(a.cpu, b.cpu) });
let index = { wall: Infinity, cpu: Infinity };
let none = { wall: Infinity, cpu: Infinity };
for (let r = 0; r < 3; r++) {
  copyFileSync(join(dir, 'index.saved'), `${path}.idx`);
  await timeOpen(); // the first open may rewrite an index of an older format; time the next ones
  index = min(index, await timeOpen());
  rmSync(`${path}.idx`);
  none = min(none, await timeOpen());
}
copyFileSync(join(dir, 'index.saved'), `${path}.idx`);
const mb = statSync(path).size / 1e6;
const show = (t) => `${t.wall.toFixed(3)} s wall, ${t.cpu.toFixed(3)} s CPU (${(mb / t.wall).toFixed(0)} MB/s)`;
console.log(`log of ${COUNT} events, ${mb.toFixed(0)} MB`);
console.log(`open for append, with index: ${show(index)}`);
console.log(`open for append, no index:   ${show(none)}`);
