import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { collect, spawnCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { runPipeline, tmpDir } from '../helpers/pipeline.js';

// `cqp run` says when nothing happens, and why: a second run of a finite source, a log another writer holds.

const VIEWS = fileURLToPath(new URL('../../pipelines/views/ice-creams.yaml', import.meta.url));

function pipeline(dir: string, count: number): string {
  const file = join(dir, 'p.yaml');
  writeFileSync(file, `source: { type: demo, count: ${count} }\nsinks:\n  - { name: log, type: log, path: data/events.log }\n`);
  return file;
}

describe('cqp run when nothing happens', () => {
  it('a second run of a finite source says the log already holds its events up to its last position and how to start over', async () => {
    const dir = tmpDir();
    const file = pipeline(dir, 50);
    const first = runPipeline(file);
    expect(await first.exit, first.stderr()).toBe(0);
    expect(first.stderr()).not.toMatch(/nothing new/);
    const second = runPipeline(file);
    expect(await second.exit, second.stderr()).toBe(0);
    expect(second.stderr()).toMatch(/nothing new: the sinks already hold the source's events up to demo:1:49 \(.*data\/events\.log\)/);
    expect(second.stderr()).toMatch(/To start over, delete the folder .*data\/ or point the sinks at new paths/);
  }, 120_000);

  it('a log another writer holds stops the run at once with the holder\'s pid, without restarting the sink', async () => {
    const dir = tmpDir();
    const holder = spawnCli('sink', ['log', '--path', join(dir, 'data/events.log')]);
    const held = collect(holder);
    holder.stdin?.write('{"a":1}\n');
    await eventually(() => existsSync(join(dir, 'data/events.log.lock')), { timeoutMs: 60_000, what: 'the first writer to take the lock' });
    const run = runPipeline(pipeline(dir, 0));
    expect(await run.exit, run.stderr()).toBe(1);
    expect(run.stderr()).toContain(`events.log is locked by another writer (pid ${holder.pid})`);
    expect(run.stderr()).toMatch(/log is not restarted: it would be refused again/);
    expect(run.stderr()).not.toMatch(/restarting it|starting it again/);
    expect(run.stderr()).toMatch(/^ {2}failed: log: .*locked by another writer/m);
    holder.stdin?.end();
    expect((await held).status).toBe(0);
  }, 120_000);

  it('a second cqp run of a running pipeline stops at once, restarting neither its log nor its views', async () => {
    const dir = tmpDir();
    const file = join(dir, 'p.yaml');
    writeFileSync(file, `source: { type: demo, count: 0, rate: 200 }\nsinks:\n  - { name: log, type: log, path: data/events.log }\n  - { name: views, type: sqlite, db: data/views.db, views: ${VIEWS} }\n`);
    const first = runPipeline(file);
    await eventually(() => first.stderr().includes('cqp: running'), { timeoutMs: 60_000, what: 'the first run to start' });
    const second = runPipeline(file);
    expect(await second.exit, second.stderr()).toBe(1);
    expect(second.stderr()).toMatch(/events\.log is locked by another writer \(pid \d+\)/);
    expect(second.stderr()).not.toMatch(/restarting it|starting it again/);
    first.child.kill('SIGTERM');
    expect(await first.exit, first.stderr()).toBe(0);
  }, 120_000);
});
