import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { BIN } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { splitStamp } from '../../src/core/position.js';
import { seededRandom } from '../../src/core/random.js';


// A failure names its seed: CQP_FOLLOW_SEED=<seed> replays it, and CQP_FOLLOW_TRACE=<file> saves the
// writer's steps and the output there.

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The lines of one file generation: from its creation (or truncation) to its rename (or truncation). */
interface Segment {
  lines: string[];
  offsets: number[];
  bytes: number;
  end: 'open' | 'renamed' | 'truncated';
}

/** Everything the `file --follow` processes printed, in order, across restarts. */
class Output {
  readonly lines: string[] = [];
  readonly stderr: string[] = [];
  lastAt = Date.now();
  private readonly texts = new Set<string>();

  has(text: string): boolean {
    return this.texts.has(text);
  }

  attach(child: ChildProcess): void {
    let partial = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        this.lines.push(line);
        this.texts.add(splitStamp(line).text);
      }
      this.lastAt = Date.now();
    });
    child.stderr?.on('data', (chunk: Buffer) => this.stderr.push(chunk.toString('utf8')));
  }

  /** Waits until `text` has been printed (fails after 15 s). */
  async waitFor(text: string): Promise<void> {
    await eventually(() => this.has(text), { timeoutMs: 15_000, everyMs: 5, what: () => `${text} to be printed; stderr:\n${this.stderr.join('')}` });
  }

}

function fingerprint(firstLine: string): string {
  return createHash('sha256').update(firstLine).digest('hex').slice(0, 16);
}

it('keeps every line exactly once across SIGKILLs, rotations of both kinds, truncations and partial lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cqp-follow-kill-'));
  dirs.push(dir);
  const path = join(dir, 'logs', 'app.ndjson');
  mkdirSync(join(dir, 'logs'));
  mkdirSync(join(dir, 'state'));
  const checkpoint = join(dir, 'state', 'app.checkpoint');
  const seed = Number(process.env['CQP_FOLLOW_SEED'] ?? 20240530);
  const rnd = seededRandom(seed);
  const pick = (n: number): number => Math.floor(rnd() * n);

  const output = new Output();
  let child: ChildProcess | undefined;
  let restarts = 0;
  const trace: string[] = [];
  const startSource = (): void => {
    trace.push(`start (segment ${segments.length - 1}, out ${output.lines.length})`);
    child = spawn(process.execPath, [BIN.source, 'file', '--path', path, '--follow', '--checkpoint', checkpoint, '--poll-ms', '20'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    output.attach(child);
  };
  const kill = async (): Promise<void> => {
    const c = child as ChildProcess;
    child = undefined;
    const closed = once(c, 'close');
    c.kill('SIGKILL');
    await closed; // stdout fully read
    trace.push(`killed (segment ${segments.length - 1}, out ${output.lines.length})`);
    restarts++;
  };

  const segments: Segment[] = [];
  let seg: Segment = { lines: [], offsets: [], bytes: 0, end: 'open' };
  segments.push(seg);
  let fd = -1;
  let seq = 0;
  let partialRest: string | undefined;
  let rotations = 0;
  let rotatedWhileDead = false;

  const write = (text: string): void => {
    writeSync(fd, text);
  };
  const newLine = (): string => JSON.stringify({ seq: seq++, seed, pad: 'é'.repeat(pick(4)) + 'x'.repeat(pick(120)) });
  const record = (line: string): void => {
    seg.lines.push(line);
    seg.offsets.push(seg.bytes);
    seg.bytes += Buffer.byteLength(line) + 1;
  };
  const appendLines = (n: number): void => {
    const lines = Array.from({ length: n }, newLine);
    for (const l of lines) record(l);
    write(lines.map((l) => `${l}\n`).join(''));
  };
  const finishPartial = (): void => {
    if (partialRest === undefined) return;
    write(partialRest);
    partialRest = undefined;
  };
  const newSegment = (ended: Segment['end']): void => {
    trace.push(`segment ${segments.length - 1} ${ended} after ${seg.lines.length} lines${child ? '' : ' (source down)'}`);
    seg.end = ended;
    seg = { lines: [], offsets: [], bytes: 0, end: 'open' };
    segments.push(seg);
  };

  // The source starts before the file exists.
  startSource();
  await sleep(100);
  fd = openSync(path, 'a');
  appendLines(3);

  const steps = 500;
  let deadFor = 0;
  for (let step = 0; step < steps; step++) {
    const op = rnd();
    if (op < 0.55) {
      finishPartial();
      appendLines(1 + pick(20));
    } else if (op < 0.65) {
      // A line written in two parts: the source must wait for its end.
      finishPartial();
      const line = newLine();
      record(line);
      const cut = 1 + pick(line.length - 1);
      write(line.slice(0, cut));
      partialRest = `${line.slice(cut)}\n`;
    } else if (op < 0.85) {
      if (!child && rotatedWhileDead) continue; // two rotations unseen: the middle file cannot be found (as with tail -F)
      finishPartial();
      if (child && seg.lines.length > 0) await output.waitFor(seg.lines[0] as string); // the source has moved to this file
      if (!child) rotatedWhileDead = true;
      rotations++;
      const kind = pick(3);
      if (kind === 0) {
        // Rename rotation; the writer writes a little more to the old file before reopening.
        renameSync(path, `${path}.${rotations}`);
        if (rnd() < 0.5) appendLines(1 + pick(3));
        closeSync(fd);
        newSegment('renamed');
        fd = openSync(path, 'a');
      } else {
        // Copy-and-truncate (kind 1) or a plain truncation (kind 2); lines between copy and truncate are lost.
        if (kind === 1) copyFileSync(path, `${path}.${rotations}`);
        if (rnd() < 0.5) appendLines(1 + pick(3));
        truncateSync(path, 0);
        newSegment('truncated');
      }
      appendLines(1 + pick(3));
    } else if (op < 0.9 && child) {
      // SIGKILL once the source has caught up and is idle: a kill between printing a batch and saving
      // its checkpoint (one rename) would print that batch again on restart — at-least-once.
      await output.waitFor(seg.lines[seg.lines.length - (partialRest === undefined ? 1 : 2)] as string);
      await sleep(20);
      await kill();
      deadFor = 1 + pick(15);
      rotatedWhileDead = false;
    }
    if (!child && deadFor-- <= 0) startSource();
    await sleep(pick(4));
  }
  finishPartial();
  appendLines(5);
  if (!child) startSource();
  await output.waitFor(seg.lines[seg.lines.length - 1] as string);
  const c = child as unknown as ChildProcess;
  const closed = once(c, 'close');
  c.kill('SIGTERM');
  const [code] = (await closed) as [number | null];
  expect(code, output.stderr.join('')).toBe(0);
  closeSync(fd);

  const where = new Map<string, { s: number; i: number }>();
  segments.forEach((s, si) => s.lines.forEach((l, i) => where.set(l, { s: si, i })));
  const present = segments.map(() => new Set<number>());
  const problems: string[] = [];
  let last = { s: -1, i: -1 };
  for (const line of output.lines) {
    const { text, position } = splitStamp(line);
    const at = where.get(text);
    if (!at) {
      problems.push(`not written: ${line}`);
      continue;
    }
    if (present[at.s]?.has(at.i)) problems.push(`repeated: ${line}`);
    present[at.s]?.add(at.i);
    const s = segments[at.s] as Segment;
    const expected = `file:${fingerprint(s.lines[0] as string)}:${s.offsets[at.i]}`;
    if (!position || `${position.source}:${position.n}` !== expected) problems.push(`position of ${text}: ${line.slice(-40)}, expected ${expected}`);
    if (at.s < last.s || (at.s === last.s && at.i <= last.i)) problems.push(`out of order: ${text}`);
    last = at;
  }
  segments.forEach((s, si) => {
    const got = present[si] as Set<number>;
    const firstMissing = s.lines.findIndex((_, i) => !got.has(i));
    if (firstMissing < 0) return;
    // Only a truncation may lose lines, and only those after the last one read: a suffix of the file.
    if (s.end !== 'truncated') problems.push(`segment ${si} (${s.end}) lost line ${firstMissing}: ${s.lines[firstMissing]}`);
    else if ([...got].some((i) => i > firstMissing)) problems.push(`segment ${si} lost line ${firstMissing} but not those after it`);
  });
  if (problems.length > 0 && process.env['CQP_FOLLOW_TRACE']) {
    writeFileSync(process.env['CQP_FOLLOW_TRACE'], [...trace, '---', ...output.lines, '---', output.stderr.join('')].join('\n'));
  }
  expect(problems, `seed ${seed}\n${output.stderr.join('')}`).toEqual([]);

  const written = segments.reduce((n, s) => n + s.lines.length, 0);
  const truncatedAway = segments.filter((s) => s.end === 'truncated').reduce((n, s) => n + s.lines.length, 0);
  expect(output.lines.length).toBeGreaterThanOrEqual(written - truncatedAway);
  expect(restarts).toBeGreaterThanOrEqual(3);
  expect(segments.filter((s) => s.end === 'renamed').length).toBeGreaterThanOrEqual(2);
  expect(segments.filter((s) => s.end === 'truncated').length).toBeGreaterThanOrEqual(2);
  const saved = JSON.parse(readFileSync(checkpoint, 'utf8')) as { fingerprint: string; offset: number };
  expect(saved).toEqual({ fingerprint: fingerprint(seg.lines[0] as string), offset: seg.bytes });
  expect(existsSync(`${checkpoint}.tmp`)).toBe(false);
});
