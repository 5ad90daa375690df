import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, collect, cqpAsync } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, type RunningPipeline } from '../helpers/pipeline.js';

const dirs: string[] = [];
const running: RunningPipeline[] = [];
afterAll(() => {
  for (const p of running) if (p.exited() === undefined) p.child.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** More than the 10 skip warnings a second a stage prints: counts must not depend on its stderr. */
const BAD = 25;
const GOOD = 30;

describe('cqp run: errors are counted where they happen', () => {
  it('/status and /metrics show each event an error policy skipped or dead-lettered, and nothing for a run: program that talks of skipping', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-run-errors-'));
    dirs.push(dir);
    // Events with bad = 1 fail `skipper` (reading a field of nothing throws), bad = 2 fail `lettered`.
    const events = [...Array.from({ length: BAD }, (_, i) => ({ i, bad: 1 })), ...Array.from({ length: BAD }, (_, i) => ({ i, bad: 2 })), ...Array.from({ length: GOOD }, (_, i) => ({ i, bad: 0 }))];
    writeFileSync(join(dir, 'in.ndjson'), events.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const talker = "process.stdin.on('data', (d) => { process.stderr.write('skipped nothing, dead-letter nothing\\n'); process.stdout.write(d); })";
    writeFileSync(
      join(dir, 'p.yaml'),
      `source: { type: file, path: in.ndjson, follow: true }
stages:
  - { name: skipper, filter: map, with: { expr: "e.r = e.bad === 1 ? e.nothing.field : 0" }, onError: skip }
  - { name: lettered, filter: map, with: { expr: "e.s = e.bad === 2 ? e.nothing.field : 0" }, onError: dead-letter, deadLetter: dead.ndjson }
  - name: talker
    run: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(talker)}]
sinks:
  - { name: out, type: file, path: out.ndjson }
`,
    );
    const p = runPipeline(join(dir, 'p.yaml'), { metrics: true });
    running.push(p);
    const byName = await eventually(
      async () => {
        const stages = new Map((await p.stages()).map((s) => [s.name, s]));
        // Each stage reports on its own clock: wait until every stage has reported its last event.
        const reported = stages.get('out')?.in === GOOD && stages.get('lettered')?.in === BAD + GOOD && stages.get('skipper')?.in === 2 * BAD + GOOD;
        return reported ? stages : undefined;
      },
      { what: () => `every stage to report all its events; stderr:\n${p.stderr()}` },
    );
    expect(byName.get('skipper')).toMatchObject({ in: 2 * BAD + GOOD, out: BAD + GOOD, errors: BAD });
    expect(byName.get('lettered')).toMatchObject({ in: BAD + GOOD, out: GOOD, errors: BAD });
    expect(byName.get('talker')?.errors).toBe(0);
    expect(p.stderr()).toMatch(/\[talker\] skipped nothing/);
    expect(readFileSync(join(dir, 'dead.ndjson'), 'utf8').trimEnd().split('\n')).toHaveLength(BAD);
    const address = (await p.waitFor(/metrics on http:\/\/([\d.:]+)\//))[1] as string;
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    const errors = (stage: string): number => Number(new RegExp(`^cqp_stage_errors_total\\{stage="${stage}"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect([errors('skipper'), errors('lettered'), errors('talker')]).toEqual([BAD, BAD, 0]);
    p.child.kill('SIGTERM');
    expect(await p.exitWithin(30_000)).toBe(0);
  });

  it('a sink reading the log reports the events its error policy skipped with its progress', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-read-log-errors-'));
    dirs.push(dir);
    // An event without the key its view needs is one the views sink rejects.
    writeFileSync(join(dir, 'v.yaml'), 'views:\n  - table: t\n    key: id\n    type: kind\n    columns:\n      v: v\n    on:\n      x: upsert\n');
    const lines = [...Array.from({ length: BAD }, (_, i) => JSON.stringify({ kind: 'x', v: i })), ...Array.from({ length: GOOD }, (_, i) => JSON.stringify({ kind: 'x', id: i, v: i }))];
    const log = await cqpAsync(['log', '--path', 'events.log'], { bin: 'sink', cwd: dir, input: `${lines.join('\n')}\n` });
    expect(log.status, log.stderr).toBe(0);
    // Its reports come on the pipe a supervisor would read (CQP_READY_FD).
    const reports: Buffer[] = [];
    const sqlite = spawn(process.execPath, [BIN.sink, 'sqlite', '--db', 'v.db', '--views', 'v.yaml', '--read-log', 'events.log', '--on-error', 'skip'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, CQP_READY_FD: '3' } });
    sqlite.stdio[3]?.on('data', (d: Buffer) => reports.push(d));
    const done = await collect(sqlite);
    expect(done.status, done.stderr).toBe(0);
    const last = JSON.parse(Buffer.concat(reports).toString('utf8').trimEnd().split('\n').at(-1) as string) as Record<string, unknown>;
    expect(last).toMatchObject({ cqp: 'progress', in: BAD + GOOD, errors: BAD });
  });
});
