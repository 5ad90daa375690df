import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { cqp } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type StageStatus } from '../helpers/pipeline.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VIEWS = join(ROOT, 'pipelines/views/ice-creams.yaml');

function logEvents(log: string): Array<Record<string, unknown> & { header: { eventId: string } }> {
  const r = cqp(['log', 'cat', log]);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim() === '' ? [] : r.stdout.trim().split('\n').map((l) => JSON.parse(l));
}

function demoIds(count: number): string[] {
  const r = cqp(['source', 'demo', '--count', String(count)]);
  return r.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { header: { eventId: string } }).header.eventId);
}

function dumpViews(db: string): Record<string, unknown[]> {
  const d = new Database(db, { readonly: true });
  try {
    const out: Record<string, unknown[]> = {};
    for (const table of ['ice_creams', 'sales']) out[table] = d.prepare(`SELECT * FROM ${table} ORDER BY 1`).all();
    return out;
  } finally {
    d.close();
  }
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'cqp-run-'));
}

describe('cqp lint', () => {
  it('passes the example pipelines and names file, line and the nearest name for a typo', () => {
    for (const name of ['ice-creams.yaml', 'follow.yaml']) {
      const r = cqp(['lint', join(ROOT, 'pipelines', name)]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/OK/);
    }
    const file = join(tmp(), 'bad.yaml');
    writeFileSync(file, 'source: { type: demo }\nstages:\n  - { name: e, filter: enrih }\nsinks:\n  - { name: out, type: stdout }\n');
    const r = cqp(['lint', file]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${file}:3: stages[0].filter: unknown filter "enrih" — did you mean "enrich"?`);
  });
});

describe('cqp run', () => {
  it('runs a finite source to its end through stages into a log and views that follow it', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 3000 }
stages:
  - { name: cat, run: cat }
  - { name: mark, filter: map, with: { expr: "e.marked = true" } }
sinks:
  - { name: log, type: log, path: out/events.log }
  - { name: views, type: sqlite, db: out/views.db, views: ${VIEWS} }
  - { name: deletes, type: file, path: out/deletes.ndjson, where: "e.header.eventType[0] === 'delete'" }
`,
    );
    const p = runPipeline(file, { metrics: true });
    expect(await p.exit).toBe(0);
    expect(p.stderr()).toMatch(/3,000 events in .* s \([\d,]+\/s\)/);
    const events = logEvents(join(dir, 'out/events.log'));
    expect(events.map((e) => e.header.eventId)).toEqual(demoIds(3000));
    expect(events.every((e) => e.marked === true)).toBe(true);
    const deletes = readFileSync(join(dir, 'out/deletes.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(deletes.length).toBe(events.filter((e) => (e.header as unknown as { eventType: string[] }).eventType[0] === 'delete').length);
    const clean = join(dir, 'clean.db');
    const demo = cqp(['source', 'demo', '--count', '3000']);
    expect(cqp(['sink', 'sqlite', '--db', clean, '--views', VIEWS], { input: demo.stdout }).status).toBe(0);
    expect(dumpViews(join(dir, 'out/views.db'))).toEqual(dumpViews(clean));
  });

  it('reads its own stdin and writes the stdout sink to its own stdout', () => {
    const file = join(tmp(), 'p.yaml');
    writeFileSync(file, 'source: { type: stdin }\nstages:\n  - { name: m, filter: map, with: { expr: "e.m = 1" } }\nsinks:\n  - { name: out, type: stdout }\n');
    const r = cqp(['run', file], { input: '{"a":1}\n{"a":2}\n' });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('{"a":1,"m":1}\n{"a":2,"m":1}\n');
    expect(r.stderr).toMatch(/2 events in/);
  });

  it('stops quietly with exit 0 when its own stdout is closed (| head -1)', async () => {
    const file = join(tmp(), 'p.yaml');
    writeFileSync(file, 'source: { type: demo, count: 0 }\nstages:\n  - { name: m, filter: map, with: { expr: "e.m = 1" } }\nsinks:\n  - { name: out, type: stdout }\n');
    const p = runPipeline(file);
    const first = await new Promise<string>((resolve) => p.child.stdout?.once('data', (d: Buffer) => resolve(d.toString('utf8'))));
    p.child.stdout?.destroy();
    expect(await p.exit).toBe(0);
    expect((JSON.parse(first.split('\n')[0] as string) as { m: number }).m).toBe(1);
    expect(p.stderr()).toMatch(/out: stdout was closed; stopping the pipeline/);
    expect(p.stderr()).not.toMatch(/restarting|crashes|exited with/);
  });

  it('joins cqp stages by direct pipes: the supervisor reads none of the stream, and still counts it', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0 }
stages:
  - { name: a, filter: map, with: { expr: "e.a = 1" } }
  - { name: b, filter: map, with: { expr: "e.b = 1" } }
sinks:
  - { name: log, type: log, path: events.log }
`,
    );
    const p = runPipeline(file, { metrics: true });
    await eventually(async () => ((await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0) >= 60_000, { timeoutMs: 60_000, what: '60000 events into log' });
    // What the supervisor itself has read so far (files, pipes, sockets; its children's reads are added
    // only once they exit): with pumps it would have read the stream three times over (source → a → b → log).
    const read = Number(/rchar: (\d+)/.exec(readFileSync(`/proc/${p.child.pid}/io`, 'utf8'))?.[1]);
    const streamBytes = statSync(join(dir, 'events.log')).size;
    expect(streamBytes).toBeGreaterThan(20e6);
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(streamBytes / 2);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    const logged = logEvents(join(dir, 'events.log'));
    expect(logged.every((e) => e.a === 1 && e.b === 1)).toBe(true);
    const n = logged.length.toLocaleString('en-US');
    expect(p.stderr()).toContain(`  a: ${n} in, ${n} out\n  b: ${n} in, ${n} out\n  log: ${n} in`);
  });

  it('reloads while 150k+ events flow: every event once, in order, through exactly one version of each stage', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    // An endless source, stopped once every reload is done and MIN events are logged: the stream is still
    // flowing at the last reload however slow the machine is.
    const MIN = 150_000;
    const stages = {
      tag: `  - { name: tag, filter: map, with: { expr: "e.v1 = 1" } }`,
      keep: `  - { name: keep, filter: map, with: { expr: "e.keep = 1" } }`,
      added: `  - { name: added, filter: map, with: { expr: "e.added = 1" } }`,
      drop: `  - { name: drop, filter: map, with: { expr: "e.dropped = 1" } }`,
      x: `  - { name: x, filter: map, with: { expr: "e.x = 1" } }`,
      y: `  - { name: y, filter: map, with: { expr: "e.y = e.x === 1 ? 'after-x' : 'before-x'" } }`,
    };
    const sinks = [`  - { name: log, type: log, path: events.log }`, `  - { name: views, type: sqlite, db: views.db, views: ${VIEWS} }`];
    const write = (list: string[], extraSinks: string[] = []): void =>
      writeFileSync(file, `source: { type: demo, count: 0, rate: 25000 }\nstages:\n${list.join('\n')}\nsinks:\n${[...sinks, ...extraSinks].join('\n')}\n`);
    write([stages.tag, stages.keep, stages.drop, stages.x, stages.y]);
    const p = runPipeline(file, { metrics: true });
    const logged = async (): Promise<number> => (await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0;
    // Between two changes, let enough events through that each version handles some (more than the pipes hold).
    const flow = async (): Promise<void> => {
      const from = await logged();
      await eventually(async () => (await logged()) > from + 8000, { timeoutMs: 60_000, what: `the log to hold more than ${from + 8000} records` });
    };
    await flow();
    const before = await p.status();
    const pid = (name: string, s = before): number | null | undefined => s.stages.find((x) => x.name === name)?.pid;

    const tag2 = stages.tag.replace('e.v1 = 1', 'e.v2 = 1');
    write([tag2, stages.keep, stages.drop, stages.x, stages.y]);
    await p.waitFor(/reload #1: ~tag/);
    await flow();
    writeFileSync(file, `${readFileSync(file, 'utf8')}stages: [\n`);
    await p.waitFor(/reload #2 refused: .*p\.yaml:\d+: /);
    write([tag2, stages.keep, `  - { name: added, run: ["/nonexistent/filter"] }`, stages.drop, stages.x, stages.y]);
    await p.waitFor(/reload #3 refused: added: could not start \/nonexistent\/filter/);
    write([tag2, stages.keep, stages.added, stages.drop, stages.x, stages.y]);
    await p.waitFor(/reload #4: \+added/);
    await flow();
    write([tag2, stages.keep, stages.added, stages.x, stages.y]);
    await p.waitFor(/reload #5: -drop/);
    await flow();
    write([tag2, stages.keep, stages.added, stages.y, stages.x]);
    await p.waitFor(/reload #6: \(stages reordered\)/);
    await flow();
    write([tag2, stages.keep, stages.added, stages.y, stages.x], [`  - { name: copy, type: file, path: copy.ndjson }`]);
    await p.waitFor(/reload #7: \+copy/);
    await flow();
    const after = await p.status();
    expect(after.reloads).toEqual({ ok: 5, failed: 2 });
    for (const name of ['source', 'keep', 'log', 'views']) expect(pid(name, after), name).toBe(pid(name));
    expect(after.stages.find((s) => s.name === 'keep')?.generation).toBe(1);
    expect(after.stages.find((s) => s.name === 'tag')?.generation).toBe(2);
    await eventually(async () => (await logged()) >= MIN, { timeoutMs: 60_000, what: `the log to hold ${MIN} records` });
    p.child.kill('SIGTERM');

    expect(await p.exit).toBe(0);
    const events = logEvents(join(dir, 'events.log'));
    expect(events.length).toBeGreaterThanOrEqual(MIN);
    expect(events.map((e) => e.header.eventId)).toEqual(demoIds(events.length));
    // Each stage version applies to one contiguous run of events: a prefix before its reload, the rest after.
    const flags = (e: Record<string, unknown>): string =>
      [e.v1 === 1 ? 'v1' : '', e.v2 === 1 ? 'v2' : '', e.added === 1 ? 'added' : '', e.dropped === 1 ? 'dropped' : '', String(e.y)].join(',');
    const phases: string[] = [];
    for (const e of events) {
      expect(e.keep).toBe(1);
      expect(e.x).toBe(1);
      expect(Boolean(e.v1) !== Boolean(e.v2)).toBe(true);
      const f = flags(e);
      if (phases.at(-1) !== f) phases.push(f);
    }
    expect(phases).toEqual([
      'v1,,,dropped,after-x',
      ',v2,,dropped,after-x',
      ',v2,added,dropped,after-x',
      ',v2,added,,after-x',
      ',v2,added,,before-x',
    ]);
    const copied = readFileSync(join(dir, 'copy.ndjson'), 'utf8').trim().split('\n');
    expect(copied.length).toBeGreaterThan(0);
    expect(copied.map((l) => (JSON.parse(l) as { header: { eventId: string } }).header.eventId)).toEqual(events.slice(-copied.length).map((e) => e.header.eventId));
    const clean = join(dir, 'clean.db');
    expect(cqp(['sink', 'sqlite', '--db', clean, '--views', VIEWS], { input: cqp(['source', 'demo', '--count', String(events.length)]).stdout }).status).toBe(0);
    expect(dumpViews(join(dir, 'views.db'))).toEqual(dumpViews(clean));
  }, 300_000); // 150k+ events through five reloads: minutes on a loaded 2-core machine (145 s seen), seconds on a quiet one

  it('reloads a changed source after the last event it sent, and a changed sink between two events', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    const write = (rate: number, kind: string): void =>
      writeFileSync(
        file,
        `source: { type: demo, count: 0, rate: ${rate} }
stages:
  - { name: m, filter: map, with: { expr: "e.m = 1" } }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: picked, type: file, path: picked.ndjson, where: "e.header.eventType[0] === '${kind}'" }
`,
      );
    write(20000, 'create');
    const p = runPipeline(file, { metrics: true });
    const logged = async (): Promise<number> => (await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0;
    await eventually(async () => (await logged()) > 8000, { timeoutMs: 60_000, what: 'the log to hold more than 8000 records' });
    write(15000, 'create');
    await p.waitFor(/reload #1: ~source/);
    const at = await logged();
    await eventually(async () => (await logged()) > at + 8000, { timeoutMs: 60_000, what: `the log to hold more than ${at + 8000} records` });
    write(15000, 'delete');
    await p.waitFor(/reload #2: ~picked/);
    const at2 = await logged();
    await eventually(async () => (await logged()) > at2 + 8000, { timeoutMs: 60_000, what: `the log to hold more than ${at2 + 8000} records` });
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    const events = logEvents(join(dir, 'events.log'));
    expect(events.map((e) => e.header.eventId)).toEqual(demoIds(events.length));
    const kinds = readFileSync(join(dir, 'picked.ndjson'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { header: { eventType: string[] } }).header.eventType[0]);
    const firstDelete = kinds.indexOf('delete');
    expect(firstDelete).toBeGreaterThan(0);
    expect(kinds.slice(0, firstDelete).every((k) => k === 'create')).toBe(true);
    expect(kinds.slice(firstDelete).every((k) => k === 'delete')).toBe(true);
  });

  it('restarts a stage killed with SIGKILL; the log and views end up as in a clean run', async () => {
    const dir = tmp();
    // middle writes straight into after (a cqp stage: told its upstream died, it drops a half-written
    // line), and after into last through the supervisor (a run: program). The source is endless, so
    // the kill always lands while it produces; SIGTERM ends the run once the restarted stage has
    // carried more events through.
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0, rate: 20000 }
stages:
  - { name: first, filter: map, with: { expr: "e.first = 1" } }
  - { name: middle, filter: map, with: { expr: "e.middle = 1" } }
  - { name: after, filter: map, with: { expr: "e.after = 1" } }
  - { name: last, run: cat }
sinks:
  - { name: log, type: log, path: out/events.log }
  - { name: views, type: sqlite, db: out/views.db, views: ${VIEWS} }
`,
    );
    const crash = runPipeline(file, { metrics: true });
    const stage = async (name: string): Promise<StageStatus> => {
      const s = (await crash.status()).stages.find((x) => x.name === name);
      if (!s) throw new Error(`no stage ${name} in /status`);
      return s;
    };
    await eventually(async () => (await stage('log')).in > 8000, { timeoutMs: 60_000, what: 'the log to hold 8000 events' });
    const victim = await stage('middle');
    process.kill(victim.pid as number, 'SIGKILL');
    await crash.waitFor(/middle exited unexpectedly \(signal SIGKILL\)/);
    const logged = (await stage('log')).in;
    await eventually(async () => (await stage('middle')).generation === 2 && (await stage('log')).in > logged + 5000, {
      timeoutMs: 60_000,
      what: 'the restarted middle stage to carry 5000 more events into the log',
    });
    crash.child.kill('SIGTERM');
    expect(await crash.exit).toBe(0);
    const stderr = (await import('node:util')).stripVTControlCharacters(crash.stderr());
    expect(stderr).not.toMatch(/refused|too many|while stopping/);
    // The log is the demo stream's unbroken prefix, every event through every stage once.
    const events = logEvents(join(dir, 'out/events.log'));
    expect(events.length).toBeGreaterThan(logged);
    expect(events.map((e) => e.header.eventId)).toEqual(demoIds(events.length));
    expect(events.every((e) => e.first === 1 && e.middle === 1 && e.after === 1)).toBe(true);
    // The views hold all of it: as built afresh from the log, and at its last seq.
    const clean = join(dir, 'clean.db');
    expect(cqp(['sink', 'sqlite', '--db', clean, '--views', VIEWS, '--read-log', join(dir, 'out/events.log')]).status).toBe(0);
    expect(dumpViews(join(dir, 'out/views.db'))).toEqual(dumpViews(clean));
    expect(stderr).toMatch(new RegExp(`^  views: [\\d,]+ in, at seq ${events.length} of ${events.length}$`, 'm'));
    // Each wait above has its own limit and message; on a loaded machine together they outlast the default.
  }, 180_000);

  it('a view that died just before shutdown is started again and reads to the end of the log before the run exits 0', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0, rate: 5000 }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: sqlite, db: views.db, views: ${VIEWS} }
`,
    );
    const p = runPipeline(file, { metrics: true });
    const views = async (): Promise<StageStatus> => {
      const s = (await p.status()).stages.find((x) => x.name === 'views');
      if (!s) throw new Error('no sink views in /status');
      return s;
    };
    // Each crash doubles the wait before the restart (100 ms, 200, 400, 800, then 1.6 s): after the
    // fifth kill the stop below comes while the view is down, waiting to be restarted.
    for (let kill = 1; kill <= 5; kill++) {
      await eventually(async () => (await views()).generation === kill, { timeoutMs: 60_000, what: `generation ${kill} of the view` });
      process.kill((await views()).pid as number, 'SIGKILL');
      await eventually(() => (p.stderr().match(/views exited unexpectedly/g) ?? []).length === kill, { timeoutMs: 60_000, what: `the supervisor to see kill ${kill}` });
    }
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    const stderr = (await import('node:util')).stripVTControlCharacters(p.stderr());
    expect(stderr).toMatch(/views is not running; starting it again to read to the log's end/);
    const last = logEvents(join(dir, 'events.log')).length;
    expect(stderr).toMatch(new RegExp(`^  views: [\\d,]+ in, at seq ${last} of ${last}$`, 'm'));
    const clean = join(dir, 'clean.db');
    expect(cqp(['sink', 'sqlite', '--db', clean, '--views', VIEWS, '--read-log', join(dir, 'events.log')]).status).toBe(0);
    expect(dumpViews(join(dir, 'views.db'))).toEqual(dumpViews(clean));
  });

  it('drains on SIGTERM: exit 0, and the log and views hold the same unbroken prefix of the stream', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0, rate: 20000 }
stages:
  - { name: a, filter: map, with: { expr: "e.a = 1" } }
  - { name: b, run: cat }
sinks:
  - { name: log, type: log, path: events.log }
  - { name: views, type: sqlite, db: views.db, views: ${VIEWS} }
`,
    );
    const p = runPipeline(file, { metrics: true });
    await eventually(async () => ((await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0) > 5000, { timeoutMs: 60_000, what: 'more than 5000 events into log' });
    const address = (await p.waitFor(/metrics on http:\/\/([\d.:]+)\//))[1] as string;
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    expect(metrics).toMatch(/^cqp_stage_events_in_total\{stage="log"\} [1-9]\d*$/m);
    expect(metrics).toMatch(/^cqp_reloads_total\{result="ok"\} 0$/m);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    const events = logEvents(join(dir, 'events.log'));
    expect(events.length).toBeGreaterThan(5000);
    expect(events.map((e) => e.header.eventId)).toEqual(demoIds(events.length));
    const clean = join(dir, 'clean.db');
    expect(cqp(['sink', 'sqlite', '--db', clean, '--views', VIEWS], { input: cqp(['source', 'demo', '--count', String(events.length)]).stdout }).status).toBe(0);
    expect(dumpViews(join(dir, 'views.db'))).toEqual(dumpViews(clean));
  });

  it('gives up with exit 1 when a stage keeps crashing', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    writeFileSync(
      file,
      `source: { type: demo, count: 0, rate: 2000 }
stages:
  - { name: flaky, run: ["sh", "-c", "head -n 3; exit 3"] }
sinks:
  - { name: out, type: file, path: out.ndjson }
`,
    );
    const p = runPipeline(file, { metrics: true });
    expect(await p.exit).toBe(1);
    expect(p.stderr()).toMatch(/flaky exited unexpectedly \(code 3\); restarting it/);
    expect(p.stderr()).toMatch(/6 crashes within 60 s \(last: flaky\); stopping the pipeline/);
  });

  it('refuses a reload whose new stage rejects its options, however long the stage takes to start', async () => {
    const dir = tmp();
    const file = join(dir, 'p.yaml');
    const yaml = (expr: string): string =>
      `name: ready\nsource: { type: demo, count: 0, rate: 2000 }\nstages:\n  - { name: tag, filter: map, with: { expr: "${expr}" } }\nsinks:\n  - { name: log, type: log, path: events.log }\n`;
    writeFileSync(file, yaml('e.v = 1'));
    // Every process starts 700 ms late, as on a loaded machine: longer than any fixed grace period.
    const slow = join(dir, 'slow-start.cjs');
    writeFileSync(slow, 'const end = Date.now() + 700;\nwhile (Date.now() < end);\n');
    const p = runPipeline(file, { metrics: true, env: { NODE_OPTIONS: `--require ${slow}` } });
    await eventually(async () => ((await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0) > 500, { timeoutMs: 60_000, what: 'more than 500 events into log' });
    const before = (await p.status()).stages.find((s) => s.name === 'tag');
    // A bad expression is only found when the new process compiles it; the swap waits for its ready signal.
    writeFileSync(file, yaml('e.v = = 2'));
    await p.waitFor(/reload #1 refused: tag: exited at once \(code 2\)/);
    const seen = (await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0;
    await eventually(async () => ((await p.status()).stages.find((s) => s.name === 'log')?.in ?? 0) > seen + 500, { timeoutMs: 60_000, what: `more than ${seen + 500} events into log` });
    const after = await p.status();
    expect(after.stages.find((s) => s.name === 'tag')?.pid).toBe(before?.pid);
    expect(after.reloads).toEqual({ ok: 0, failed: 1 });
    expect(p.stderr()).not.toMatch(/restarting it/);
  });
});
