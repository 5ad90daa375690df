import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
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
    const [theirs, ours] = await socketPair();
    let rest = '';
    ours.setEncoding('utf8').on('data', (t: string) => (rest += t));
    const restEnded = new Promise((resolve) => ours.on('end', resolve));
    stage.child.send({ cqp: 'output' }, theirs as Socket);
    stdin.end();
    await restEnded;
    expect(await exited).toBe(0);
    const all = (old + rest).trim().split('\n').map((l) => JSON.parse(l) as { i: number; n: number });
    expect(all.map((e) => e.i)).toEqual(Array.from({ length: 30_000 }, (_, k) => k));
    expect(all.every((e) => e.n === e.i * 2)).toBe(true);
    const last = stage.messages.filter((m) => m.cqp === 'progress').at(-1);
    expect(last).toMatchObject({ in: 30_000, out: 30_000 });
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
