import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { barrierLine } from '../../src/protocol.js';
import { SwitchableOutput } from '../../src/stage-control.js';
import { eventually } from '../helpers/eventually.js';
import { socketPair } from '../../src/supervisor/link.js';
import { BIN } from '../helpers/cli.js';

/** A cqp filter with the control channel `cqp run` gives it (Node IPC on fd 3). */
function controlled(args: string[]): { child: ChildProcess; stdout: () => string; stderr: () => string; messages: Array<Record<string, unknown>>; reply: (kind: string) => Promise<void> } {
  const child = spawn(process.execPath, [BIN.filter, ...args], { stdio: ['pipe', 'pipe', 'pipe', 'ipc'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const messages: Array<Record<string, unknown>> = [];
  const waiters = new Map<string, () => void>();
  child.on('message', (m: Record<string, unknown>) => {
    messages.push(m);
    waiters.get(String(m.cqp))?.();
  });
  const reply = (kind: string): Promise<void> => new Promise((resolve) => waiters.set(kind, resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, messages, reply };
}

const lines = (from: number, to: number): string => Array.from({ length: to - from }, (_, k) => `{"i":${from + k},"pad":"${'x'.repeat(300)}"}\n`).join('');
const exit = (child: ChildProcess): Promise<number | null> => new Promise((resolve) => child.on('close', (code) => resolve(code)));
/**
 * Hands the stage a socket as its next output (as after a cut), ends its input, and resolves with what
 * came out into the socket once the stage has ended it.
 */
async function endIntoNewOutput(stage: ReturnType<typeof controlled>): Promise<string> {
  const [theirs, ours] = await socketPair();
  let rest = '';
  ours.setEncoding('utf8').on('data', (t: string) => (rest += t));
  const restEnded = new Promise((resolve) => ours.on('end', resolve));
  stage.child.send({ cqp: 'output' }, theirs as Socket);
  stage.child.stdin?.end();
  await restEnded;
  return rest;
}

const until = (check: () => boolean, what: string): Promise<boolean> => eventually(check, { everyMs: 10, what });

describe('a stage under cqp run (the control channel)', () => {
  it('cut: stops after a whole line, holds what follows, and writes it to the output it is handed next', async () => {
    const stage = controlled(['map', 'e.n = e.i * 2']);
    const exited = exit(stage.child);
    const stdin = stage.child.stdin as NodeJS.WritableStream;
    // Lines in odd-sized pieces, so the cut falls wherever the stage happens to be.
    const first = lines(0, 20_000);
    for (let at = 0; at < first.length; at += 70_001) stdin.write(first.slice(at, at + 70_001));
    await until(() => stage.stdout().length > 0, 'the stage to write');
    const cut = stage.reply('cut');
    stage.child.send({ cqp: 'cut' });
    await cut;
    const before = stage.messages.filter((m) => m.cqp === 'progress').at(-1) as { out: number };
    await until(() => stage.stdout().split('\n').length - 1 >= before.out, 'the stage to write every line it reported before the cut');
    stdin.write(lines(20_000, 30_000));
    await new Promise((r) => setTimeout(r, 300));
    // Nothing goes to the old output after the cut.
    const old = stage.stdout();
    expect(old.endsWith('\n')).toBe(true);
    expect(old.split('\n').length - 1).toBe(before.out);
    const rest = await endIntoNewOutput(stage);
    expect(await exited).toBe(0);
    const all = (old + rest).trim().split('\n').map((l) => JSON.parse(l) as { i: number; n: number });
    expect(all.map((e) => e.i)).toEqual(Array.from({ length: 30_000 }, (_, k) => k));
    expect(all.every((e) => e.n === e.i * 2)).toBe(true);
    const last = stage.messages.filter((m) => m.cqp === 'progress').at(-1);
    expect(last).toMatchObject({ in: 30_000, out: 30_000 });
  });

  it('barrier: the output of every line before the barrier line goes to the old output, the rest to the next one', async () => {
    const stage = controlled(['map', 'e.n = e.i * 2']);
    const exited = exit(stage.child);
    const stdin = stage.child.stdin as NodeJS.WritableStream;
    const ack = stage.reply('ack');
    stage.child.send({ cqp: 'barrier', id: 't1', cut: true });
    await ack;
    const cut = stage.reply('cut');
    // One write: the chunks the stage reads hold lines from both sides of the barrier.
    stdin.write(lines(0, 5000) + barrierLine('t1') + lines(5000, 8000));
    await cut;
    expect(stage.messages.find((m) => m.cqp === 'cut')).toEqual({ cqp: 'cut', id: 't1' });
    const rest = await endIntoNewOutput(stage);
    expect(await exited).toBe(0);
    const ids = (text: string): number[] => text.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i);
    expect(ids(stage.stdout())).toEqual(Array.from({ length: 5000 }, (_, k) => k));
    expect(ids(rest)).toEqual(Array.from({ length: 3000 }, (_, k) => 5000 + k));
    // The barrier line is no event: neither read nor written.
    expect(stage.messages.filter((m) => m.cqp === 'progress').at(-1)).toMatchObject({ in: 8000, out: 8000, errors: 0 });
  });

  it('a barrier line the stage was not armed for fails the stage instead of passing as an event', async () => {
    const stage = controlled(['map', 'e.n = 1', '--on-error', 'skip']);
    stage.child.stdin?.end(`{"i":1}\n${barrierLine('x')}{"i":2}\n`);
    expect(await exit(stage.child)).not.toBe(0);
    expect(stage.stdout()).toBe('{"i":1,"n":1}\n');
    expect(stage.stderr()).toMatch(/barrier line .* did not announce/);
  });

  it('upstream-lost: a half-written last line is dropped with a warning instead of failing the stage', async () => {
    // Without the word, an unfinished last line is read as a line (here a bad one).
    const plain = controlled(['map', 'e.n = 1']);
    plain.child.stdin?.end('{"i":1}\n{"i":');
    expect(await exit(plain.child)).not.toBe(0);
    expect(plain.stdout()).toBe('{"i":1,"n":1}\n');

    const stage = controlled(['map', 'e.n = 1']);
    const exited = exit(stage.child);
    stage.child.stdin?.write('{"i":1}\n{"i":');
    const ack = stage.reply('ack');
    stage.child.send({ cqp: 'upstream-lost' });
    await ack;
    stage.child.stdin?.end();
    expect(await exited).toBe(0);
    expect(stage.stdout()).toBe('{"i":1,"n":1}\n');
    expect(stage.stderr()).toMatch(/dropped an unfinished last line from a process that died \(line 2\)/);
  });

  it('output-closed: a stage whose stdout closes under it says so before it exits 0, and counts what it handled', async () => {
    const stage = controlled(['map', 'e.n = e.i.x.y', '--on-error', 'skip']);
    const exited = exit(stage.child);
    const closed = stage.reply('output-closed');
    // Bad events first (the policy skips them), then good ones until the closed stdout stops the stage.
    stage.child.stdin?.write('{"i":1}\n{"i":2}\n');
    await eventually(() => stage.messages.some((m) => m.cqp === 'progress' && m.errors === 2), { what: 'a report of the 2 skipped events' });
    stage.child.stdout?.destroy();
    stage.child.stdin?.on('error', () => {});
    const good = lines(0, 2000).replace(/"i":(\d+)/g, '"i":{"x":{"y":$1}}');
    // Written on until it notices (the first write after the close fails).
    await eventually(
      () => {
        if (stage.child.exitCode !== null || !stage.child.stdin?.writable) return true;
        stage.child.stdin.write(good);
        return false;
      },
      { what: () => `the stage to exit once its stdout closed; stderr: ${stage.stderr()}`, everyMs: 20 },
    );
    await closed;
    expect(await exited).toBe(0);
    const kinds = stage.messages.map((m) => m.cqp);
    expect(kinds).toContain('output-closed');
    expect(stage.messages.filter((m) => m.cqp === 'progress').at(-1)).toMatchObject({ errors: 2 });
  });
});

describe('a stage under cqp run, tapped (cqp tap)', () => {
  const rejectThree = ['where', "e.i !== 3 || (() => { throw new Error('three') })()", '--on-error', 'skip'];
  const listening = (stage: ReturnType<typeof controlled>): Promise<unknown> =>
    eventually(() => stage.messages.some((m) => m.cqp === 'progress'), { what: () => `the stage's first report (stderr: ${stage.stderr()})` });

  it('mirrors nothing until told: no tapped message, mirrored 0', async () => {
    const stage = controlled(rejectThree);
    await listening(stage);
    stage.child.stdin?.end(lines(0, 10));
    expect(await exit(stage.child)).toBe(0);
    expect(stage.messages.filter((m) => m.cqp === 'tapped')).toEqual([]);
    const last = stage.messages.filter((m) => m.cqp === 'progress').at(-1);
    expect(last).toMatchObject({ in: 10, out: 9, errors: 1, mirrored: 0 });
  });

  it('told to, mirrors every line it writes and each rejected event with its reason; told to stop, stops', async () => {
    const stage = controlled(rejectThree);
    await listening(stage);
    stage.child.send({ cqp: 'tap', outputs: 'all', errors: true });
    stage.child.stdin?.write(lines(0, 10));
    const tapped = (): Array<{ outputs: string[]; errors: Array<{ reason: string; line: string }> }> => stage.messages.filter((m) => m.cqp === 'tapped') as never;
    await eventually(() => tapped().flatMap((m) => m.outputs).length === 9, { what: () => `9 mirrored lines (stderr: ${stage.stderr()})` });
    expect(tapped().flatMap((m) => m.outputs).map((l) => (JSON.parse(l) as { i: number }).i)).toEqual([0, 1, 2, 4, 5, 6, 7, 8, 9]);
    expect(tapped().flatMap((m) => m.errors)).toEqual([{ reason: 'where: three', line: lines(3, 4).trimEnd() }]);
    stage.child.send({ cqp: 'tap', outputs: 0, errors: false });
    // Told in order on one channel: the lines written after the stop are not mirrored.
    await eventually(() => stage.messages.filter((m) => m.cqp === 'progress').some((m) => m.in === 10), { what: 'the first lines counted' });
    stage.child.stdin?.end(lines(10, 20));
    expect(await exit(stage.child)).toBe(0);
    expect(tapped().flatMap((m) => m.outputs)).toHaveLength(9);
    expect(stage.messages.filter((m) => m.cqp === 'progress').at(-1)).toMatchObject({ in: 20, out: 19, mirrored: 10 });
  });

  it('at a rate, mirrors at most that many lines a second', async () => {
    const stage = controlled(['where', 'true']);
    await listening(stage);
    stage.child.send({ cqp: 'tap', outputs: 5, errors: false });
    stage.child.stdin?.end(lines(0, 100));
    expect(await exit(stage.child)).toBe(0);
    const mirrored = stage.messages.filter((m) => m.cqp === 'tapped').flatMap((m) => m.outputs as string[]);
    expect(mirrored.length).toBeGreaterThan(0);
    expect(mirrored.length).toBeLessThanOrEqual(10);
  });
});

describe('SwitchableOutput', () => {
  it('armed, splits a chunk at the barrier line: the lines before go to the current output, the line is dropped, the rest waits for the next', async () => {
    const collect = (stream: PassThrough): (() => string) => {
      let text = '';
      stream.setEncoding('utf8').on('data', (t: string) => (text += t));
      return () => text;
    };
    const first = new PassThrough();
    const old = collect(first);
    const output = new SwitchableOutput(first);
    let cut = false;
    const line = barrierLine('b7');
    output.armCut(line, () => (cut = true));
    output.write(`{"i":1}\n{"i":2}\n${line}{"i":3}\n`);
    output.write('{"i":4}\n');
    await eventually(() => cut, { what: 'the cut at the barrier' });
    expect(old()).toBe('{"i":1}\n{"i":2}\n');
    expect(output.cutOff).toBe(true);
    const next = new PassThrough();
    const rest = collect(next);
    output.connect(next as unknown as Socket);
    await eventually(() => rest() === '{"i":3}\n{"i":4}\n', { what: () => `the lines after the barrier in the next output, got ${JSON.stringify(rest())}` });
    expect(old()).toBe('{"i":1}\n{"i":2}\n');
  });
});
