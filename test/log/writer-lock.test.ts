import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { BIN, collect, cqp, type CliResult } from '../helpers/cli.js';
import { tempDir } from './helpers.js';
import { eventually } from '../helpers/eventually.js';


const started: Writer[] = [];
// A failed test leaves no writer behind.
afterEach(() => {
  for (const writer of started.splice(0)) if (!writer.exited) writer.child.kill('SIGKILL');
});

interface Writer {
  child: ChildProcess;
  done: Promise<CliResult>;
  exited: boolean;
}

/** Starts `cqp-sink log --path events.log` (optionally through `wrap`, e.g. unshare) with stdin kept open. */
function startWriter(dir: string, wrap: string[] = [], env: NodeJS.ProcessEnv = process.env): Writer {
  const argv = [...wrap, process.execPath, BIN.sink, 'log', '--path', 'events.log'];
  const child = spawn(argv[0] as string, argv.slice(1), { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'], env });
  child.stdin?.on('error', () => undefined);
  const writer: Writer = { child, done: collect(child), exited: false };
  void writer.done.then(() => {
    writer.exited = true;
  });
  started.push(writer);
  return writer;
}

const lines = (name: string, n: number): string => Array.from({ length: n }, (_, i) => `{"writer":"${name}","i":${i}}\n`).join('');

function catLog(dir: string): string {
  const cat = cqp(['log', 'cat', 'events.log'], { cwd: dir });
  return cat.status === 0 ? cat.stdout : '';
}

/** Starts the first writer and waits until its first event is in the log (it holds the lock). */
async function holder(dir: string, env?: NodeJS.ProcessEnv): Promise<Writer> {
  const first = startWriter(dir, [], env);
  first.child.stdin?.write(lines('first', 1));
  await eventually(() => catLog(dir).includes('"writer":"first"') || first.exited, { what: 'the first writer to append its event' });
  expect(first.exited).toBe(false);
  return first;
}

function expectRefused(result: CliResult, holderPid: number | undefined): void {
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(`events.log is locked by another writer (pid ${holderPid})`);
  // The lock is the OS's: removing a file is never the way out.
  expect(result.stderr).not.toMatch(/remove/i);
}

async function finish(first: Writer, dir: string, expected: string): Promise<void> {
  first.child.stdin?.end(lines('first', 4).split('\n').slice(1).join('\n'));
  expect((await first.done).status).toBe(0);
  expect(cqp(['log', 'verify', 'events.log'], { cwd: dir }).status).toBe(0);
  expect(catLog(dir)).toBe(expected);
}

describe('the command log has one writer, held by an OS lock', () => {
  test('two cqp-sink log started together, 20 times: exactly one wins, the log verifies', async () => {
    for (let round = 0; round < 20; round++) {
      const dir = tempDir();
      const a = startWriter(dir);
      const b = startWriter(dir);
      a.child.stdin?.write(lines('a', 50));
      b.child.stdin?.write(lines('b', 50));
      await eventually(() => a.exited || b.exited, { what: `round ${round}: one of two writers to be refused (both are running)` });
      const [loser, winner, winnerName] = a.exited ? [a, b, 'b'] : [b, a, 'a'];
      expectRefused(await loser.done, winner.child.pid);
      winner.child.stdin?.end();
      const result = await winner.done;
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(cqp(['log', 'verify', 'events.log'], { cwd: dir }).status).toBe(0);
      expect(catLog(dir)).toBe(lines(winnerName, 50));
    }
  }, 400_000);

  test('deleting FILE.lock while a writer holds the log lets no second writer in', async () => {
    const dir = tempDir();
    const first = await holder(dir);
    rmSync(join(dir, 'events.log.lock'), { force: true });
    const second = startWriter(dir);
    second.child.stdin?.end(lines('second', 3));
    expectRefused(await second.done, first.child.pid);
    await finish(first, dir, lines('first', 4));
  }, 60_000);

  test('a holder that is a stage of a cqp run that died is waited for (it stops by itself); one of a live run is not', async () => {
    // A pid that was a process and is no more: the holder's supervisor, killed.
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const dead = Number(gone.stdout);
    expect(() => process.kill(dead, 0)).toThrow();
    const dir = tempDir();
    // Of a live supervisor (this test process): refused at once, as any other writer.
    const live = await holder(dir, { ...process.env, CQP_SUPERVISOR_PID: String(process.pid) });
    const refused = startWriter(dir);
    refused.child.stdin?.end(lines('second', 3));
    expectRefused(await refused.done, live.child.pid);
    await finish(live, dir, lines('first', 4));
    // Of a dead one: the new writer waits, then appends once the orphan has finished.
    const orphan = startWriter(dir, [], { ...process.env, CQP_SUPERVISOR_PID: String(dead) });
    orphan.child.stdin?.write(lines('orphan', 1));
    await eventually(() => catLog(dir).includes('"writer":"orphan"'), { what: 'the orphan to append its event' });
    const next = startWriter(dir);
    next.child.stdin?.end(lines('next', 2));
    let nextErr = '';
    next.child.stderr?.on('data', (d: Buffer) => (nextErr += d.toString()));
    await eventually(() => nextErr.includes(`waiting for pid ${orphan.child.pid}, a stage of a cqp run that stopped`), { what: () => `the next writer to say it waits; stderr: ${nextErr}` });
    expect(next.exited).toBe(false);
    orphan.child.stdin?.end(lines('orphan', 3).split('\n').slice(1).join('\n'));
    expect((await orphan.done).status).toBe(0);
    expect((await next.done).status).toBe(0);
    expect(cqp(['log', 'verify', 'events.log'], { cwd: dir }).status).toBe(0);
    expect(catLog(dir)).toBe(lines('first', 4) + lines('orphan', 3) + lines('next', 2));
  }, 60_000);

  const unshare = ['unshare', '--pid', '--fork', '--mount-proc'];
  const canUnshare = spawnSync(unshare[0] as string, [...unshare.slice(1), 'true']).status === 0;
  test.skipIf(!canUnshare)('a writer in another pid namespace (the holder\'s pid means nothing there) is refused', async () => {
    // skipIf: `unshare --pid --fork --mount-proc` needs root or user namespaces, which this machine lacks.
    const dir = tempDir();
    const first = await holder(dir);
    const second = startWriter(dir, unshare);
    second.child.stdin?.end(lines('second', 3));
    expectRefused(await second.done, first.child.pid);
    await finish(first, dir, lines('first', 4));
  }, 60_000);
});
