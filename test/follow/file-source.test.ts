import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, GiveUp } from '../helpers/eventually.js';
import { CqpError } from '../../src/core/errors.js';
import type { ErrorMode } from '../../src/core/policy.js';
import { parseOptions } from '../../src/core/options.js';
import { splitStamp, stampLine, type PositionMap } from '../../src/core/position.js';
import { runSource } from '../../src/core/runtime.js';
import fileSource from '../../src/sources/file.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cqp-follow-'));
  dirs.push(d);
  return d;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The fingerprint as documented: SHA-256 of the first line's bytes (without `\n`), 16 hex digits. */
function fingerprint(content: string | Buffer): string {
  const bytes = Buffer.from(content);
  const nl = bytes.indexOf(10);
  return createHash('sha256').update(bytes.subarray(0, nl < 0 ? bytes.length : nl)).digest('hex').slice(0, 16);
}

interface Run {
  /** Output lines so far. */
  lines: string[];
  warnings: string[];
  /** Resolves when the source has ended. */
  done: Promise<void>;
  /** Waits until at least `n` lines are out (fails after 10 s). */
  waitFor(n: number): Promise<void>;
  stop(): Promise<void>;
}

interface RunOptions {
  resume?: PositionMap;
  onError?: ErrorMode;
  deadLetter?: string;
  maxLineBytes?: number;
}

/** Runs the file source in this process through the stage runtime, collecting its output lines. */
function start(raw: Record<string, unknown>, run: RunOptions = {}): Run {
  const controller = new AbortController();
  const lines: string[] = [];
  const warnings: string[] = [];
  let partial = '';
  const output = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = partial + chunk.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      cb();
    },
  });
  const options = parseOptions(fileSource, raw, 'test');
  const done = runSource(
    fileSource,
    options,
    { onError: run.onError ?? 'fail', deadLetter: run.deadLetter, maxLineBytes: run.maxLineBytes ?? 16 * 1024 * 1024, resume: run.resume },
    { input: process.stdin, output, warn: (m) => warnings.push(m), signal: controller.signal, cwd: process.cwd() },
  );
  let ended = false;
  void done.then(
    () => (ended = true),
    () => (ended = true),
  );
  return {
    lines,
    warnings,
    done,
    async waitFor(n) {
      await eventually(
        () => {
          if (lines.length >= n) return true;
          if (ended) throw new GiveUp(`source ended with ${lines.length} lines, expected ${n}`);
          return false;
        },
        { timeoutMs: 10_000, everyMs: 5, what: () => `${n} lines; got ${lines.length}: ${lines.join(' | ')}` },
      );
    },
    async stop() {
      controller.abort();
      await done;
    },
  };
}

async function readWhole(raw: Record<string, unknown>, run: RunOptions = {}): Promise<Run> {
  const r = start(raw, run);
  await r.done;
  return r;
}

/** Event texts and positions of output lines. */
function parse(lines: string[]): Array<{ text: string; at: string }> {
  return lines.map((l) => {
    const { text, position } = splitStamp(l);
    return { text, at: position ? `${position.source}:${position.n}` : '' };
  });
}

const A = '{"id":"a","n":1}';
const B = '{"id":"b","n":2}';
const C = '{"id":"c","n":3}';

describe('file source without --follow', () => {
  const cases: Array<{ name: string; content: string | Buffer; expected: Array<[text: string, offset: number]> }> = [
    { name: 'plain lines', content: `${A}\n${B}\n`, expected: [[A, 0], [B, 17]] },
    { name: 'CRLF line ends', content: `${A}\r\n${B}\r\n`, expected: [[A, 0], [B, 18]] },
    { name: 'a UTF-8 BOM at the start', content: `\uFEFF${A}\n${B}\n`, expected: [[A, 0], [B, 20]] },
    { name: 'empty lines', content: `\n\n${A}\n\n\r\n${B}\n\n`, expected: [[A, 2], [B, 22]] },
    { name: 'no newline after the last line', content: `${A}\n${B}`, expected: [[A, 0], [B, 17]] },
    { name: 'multi-byte characters', content: `{"s":"é✓"}\n${A}\n`, expected: [['{"s":"é✓"}', 0], [A, 14]] },
    { name: 'an empty object', content: `{}\n{ }\n`, expected: [['{}', 0], ['{ }', 3]] },
    { name: 'an empty file', content: '', expected: [] },
  ];
  for (const c of cases) {
    it(`reads ${c.name}, stamping each line with file:<fingerprint>:<offset>`, async () => {
      const dir = tempDir();
      const path = join(dir, 'in.ndjson');
      writeFileSync(path, c.content);
      const r = await readWhole({ path });
      const source = `file:${fingerprint(c.content)}`;
      expect(r.lines).toEqual(c.expected.map(([text, n]) => stampLine(text, { source, n: String(n) })));
      for (const line of r.lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    });
  }

  it('names a file whose first line is still being written by its whole text', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, A);
    const r = await readWhole({ path });
    expect(r.lines).toEqual([stampLine(A, { source: `file:${fingerprint(A)}`, n: '0' })]);
  });

  it('fails with a clear message when the file does not exist', async () => {
    const path = join(tempDir(), 'missing.ndjson');
    const error = await readWhole({ path }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CqpError);
    expect((error as CqpError).message).toContain('missing.ndjson does not exist');
    expect((error as CqpError).message).toContain('--follow');
  });

  const bad = `${A}\nnot json\n[1,2]\n${'{"long":"' + 'x'.repeat(100) + '"}'}\n${B}\n`;
  const policies: Array<{ mode: ErrorMode; check: (r: Run | undefined, error: unknown, deadLetter: string) => void }> = [
    {
      mode: 'fail',
      check: (_r, error) => {
        expect(error).toBeInstanceOf(CqpError);
        expect((error as CqpError).code).toBe('BAD_INPUT');
        expect((error as CqpError).message).toMatch(/:2: invalid JSON/);
        expect((error as CqpError).message).toContain('not json');
      },
    },
    {
      mode: 'skip',
      check: (r) => {
        expect(parse(r?.lines ?? []).map((l) => l.text)).toEqual([A, B]);
        expect(r?.warnings.join('\n')).toMatch(/:2: invalid JSON/);
        expect(r?.warnings.join('\n')).toMatch(/:3: not a JSON object \(got an array\)/);
        expect(r?.warnings.join('\n')).toMatch(/:4: line is 111 bytes, longer than --max-line-bytes 64/);
      },
    },
    {
      mode: 'dead-letter',
      check: (r, _error, deadLetter) => {
        expect(parse(r?.lines ?? []).map((l) => l.text)).toEqual([A, B]);
        const dead = readFileSync(deadLetter, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { line: number; raw: string; error: string });
        expect(dead.map((d) => d.line)).toEqual([2, 3, 4]);
        expect(dead[0]?.raw).toBe('not json');
        expect(dead[1]?.error).toContain('not a JSON object');
      },
    },
  ];
  for (const p of policies) {
    it(`reports bad lines (invalid JSON, not an object, too long) under --on-error ${p.mode}`, async () => {
      const dir = tempDir();
      const path = join(dir, 'in.ndjson');
      const deadLetter = join(dir, 'dead.ndjson');
      writeFileSync(path, bad);
      let r: Run | undefined;
      let error: unknown;
      try {
        r = await readWhole({ path }, { onError: p.mode, deadLetter, maxLineBytes: 64 });
      } catch (e) {
        error = e;
      }
      if (p.mode !== 'fail') expect(error).toBeUndefined();
      p.check(r, error, deadLetter);
    });
  }

  it('reads a file larger than one read chunk, with lines across chunk boundaries', async () => {
    const path = join(tempDir(), 'big.ndjson');
    const events = Array.from({ length: 20_000 }, (_, i) => JSON.stringify({ i, pad: 'é'.repeat(i % 97) }));
    writeFileSync(path, `${events.join('\n')}\n`);
    const r = await readWhole({ path });
    const out = parse(r.lines);
    expect(out.map((l) => l.text)).toEqual(events);
    let offset = 0;
    out.forEach((l, i) => {
      expect(l.at.endsWith(`:${offset}`)).toBe(true);
      offset += Buffer.byteLength(events[i] as string) + 1;
    });
  });
});

describe('file source resuming', () => {
  const content = `${A}\n${B}\n${C}\n`;
  const source = `file:${fingerprint(content)}`;
  const cases: Array<{ name: string; resume: PositionMap; expected: string[] }> = [
    { name: 'after a line applied whole', resume: { [source]: '17' }, expected: [C] },
    { name: 'at a line applied in part (n.k)', resume: { [source]: '17.0' }, expected: [B, C] },
    { name: 'after the last line', resume: { [source]: '34' }, expected: [] },
    { name: 'from the start for another file', resume: { 'file:0123456789abcdef': '17' }, expected: [A, B, C] },
    { name: 'ignoring positions of other sources', resume: { 'log:x': '5', [source]: '0' }, expected: [B, C] },
  ];
  for (const c of cases) {
    it(`resumes from the sinks' positions ${c.name}`, async () => {
      const path = join(tempDir(), 'in.ndjson');
      writeFileSync(path, content);
      const r = await readWhole({ path }, { resume: c.resume });
      expect(parse(r.lines).map((l) => l.text)).toEqual(c.expected);
    });
  }

  it('warns and starts over when the file is shorter than the position', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n`);
    const r = await readWhole({ path }, { resume: { [`file:${fingerprint(A)}`]: '500' } });
    expect(parse(r.lines).map((l) => l.text)).toEqual([A]);
    expect(r.warnings.join('\n')).toContain('shorter than the position');
  });

  it('resumes from a checkpoint file, which it keeps up to date', async () => {
    const dir = tempDir();
    const path = join(dir, 'in.ndjson');
    writeFileSync(path, `${A}\n${B}\n`);
    // The checkpoint's folder is created when missing; one that cannot be made is an error that says so.
    writeFileSync(join(dir, 'plain'), 'a file, not a folder\n');
    const error = await readWhole({ path, checkpoint: join(dir, 'plain', 'in.checkpoint') }).catch((e: unknown) => e);
    expect((error as CqpError).message).toMatch(/cannot (read|write) checkpoint .*plain\/in\.checkpoint/);
    const checkpointHere = join(dir, 'state', 'deeper', 'in.checkpoint');
    const first = await readWhole({ path, checkpoint: checkpointHere });
    expect(parse(first.lines).map((l) => l.text)).toEqual([A, B]);
    expect(JSON.parse(readFileSync(checkpointHere, 'utf8'))).toEqual({ fingerprint: fingerprint(A), offset: 34 });
    appendFileSync(path, `${C}\n`);
    const second = await readWhole({ path, checkpoint: checkpointHere });
    expect(parse(second.lines)).toEqual([{ text: C, at: `file:${fingerprint(A)}:34` }]);
    const third = await readWhole({ path, checkpoint: checkpointHere });
    expect(third.lines).toEqual([]);
  });

  it('prefers the positions given by cqp run over the checkpoint', async () => {
    const dir = tempDir();
    const path = join(dir, 'in.ndjson');
    const checkpoint = join(dir, 'cp.json');
    writeFileSync(path, content);
    writeFileSync(checkpoint, JSON.stringify({ fingerprint: fingerprint(content), offset: 34 }));
    const r = await readWhole({ path, checkpoint }, { resume: { [source]: '0' } });
    expect(parse(r.lines).map((l) => l.text)).toEqual([B, C]);
  });

  it('rejects a checkpoint file that is not one, saying how to fix it', async () => {
    const dir = tempDir();
    const path = join(dir, 'in.ndjson');
    const checkpoint = join(dir, 'cp.json');
    writeFileSync(path, content);
    writeFileSync(checkpoint, '{"offset": "x"}');
    const error = await readWhole({ path, checkpoint }).catch((e: unknown) => e);
    expect((error as CqpError).message).toContain('delete it to start over');
  });

  it('finishes the rotated-away file a position names before reading the new file at the path', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.ndjson');
    const checkpoint = join(dir, 'cp.json');
    writeFileSync(path, `${A}\n${B}\n`);
    writeFileSync(checkpoint, JSON.stringify({ fingerprint: fingerprint(A), offset: 17 }));
    appendFileSync(path, `${C}\n`);
    renameSync(path, join(dir, 'app.ndjson.1'));
    writeFileSync(join(dir, 'app.ndjson.2'), '{"other":"file"}\n');
    const D = '{"id":"d"}';
    writeFileSync(path, `${D}\n`);
    const r = await readWhole({ path, checkpoint });
    expect(parse(r.lines)).toEqual([
      { text: B, at: `file:${fingerprint(A)}:17` },
      { text: C, at: `file:${fingerprint(A)}:34` },
      { text: D, at: `file:${fingerprint(D)}:0` },
    ]);
    expect(r.warnings.join('\n')).toContain('app.ndjson.1');
  });

  it('follows the sinks\' positions into a rotated-away file, then waits for the path to reappear', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.ndjson');
    writeFileSync(path, `${A}\n${B}\n${C}\n`);
    renameSync(path, join(dir, 'app.ndjson-2024-05-30'));
    const r = start({ path, follow: true, pollMs: 10 }, { resume: { [`file:${fingerprint(A)}`]: '0', 'file:0123456789abcdef': '99' } });
    await r.waitFor(2);
    const D = '{"id":"d"}';
    writeFileSync(path, `${D}\n`);
    await r.waitFor(3);
    await r.stop();
    expect(parse(r.lines).map((l) => l.text)).toEqual([B, C, D]);
  });
});

describe('file source with --follow', () => {
  it('picks up appends through file-system events, without waiting for the poll', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n`);
    // A poll of a minute: only file-system events can deliver the append in time.
    const r = start({ path, follow: true, pollMs: 60_000 });
    await r.waitFor(1);
    appendFileSync(path, `${B}\n`);
    await r.waitFor(2);
    await r.stop();
    expect(parse(r.lines).map((l) => l.text)).toEqual([A, B]);
  });

  it('holds a partial last line until its newline arrives', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n{"id":"b",`);
    const r = start({ path, follow: true, pollMs: 10 });
    await r.waitFor(1);
    await sleep(150);
    expect(r.lines).toHaveLength(1);
    appendFileSync(path, `"n":2}\n`);
    await r.waitFor(2);
    await r.stop();
    expect(parse(r.lines)).toEqual([
      { text: A, at: `file:${fingerprint(A)}:0` },
      { text: B, at: `file:${fingerprint(A)}:17` },
    ]);
  });

  it('starts again at 0, with a warning, when the file is truncated', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n${B}\n`);
    const r = start({ path, follow: true, pollMs: 10 });
    await r.waitFor(2);
    truncateSync(path, 0);
    await sleep(100);
    appendFileSync(path, `${C}\n`);
    await r.waitFor(3);
    await r.stop();
    expect(parse(r.lines).map((l) => l.at)).toEqual([`file:${fingerprint(A)}:0`, `file:${fingerprint(A)}:17`, `file:${fingerprint(C)}:0`]);
    expect(r.warnings.join('\n')).toContain('was truncated');
  });

  it('notices a truncation even when the file has already grown past the old offset', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n`);
    const r = start({ path, follow: true, pollMs: 10 });
    await r.waitFor(1);
    const longer = '{"id":"z","pad":"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}';
    writeFileSync(path, `${longer}\n${B}\n`);
    await r.waitFor(3);
    await r.stop();
    expect(parse(r.lines).map((l) => l.text)).toEqual([A, longer, B]);
  });

  it('finishes the old file after a rename rotation, then reads the new one', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.ndjson');
    writeFileSync(path, `${A}\n`);
    const r = start({ path, follow: true, pollMs: 10 });
    await r.waitFor(1);
    const writer = openSync(path, 'a');
    renameSync(path, join(dir, 'app.ndjson.1'));
    await sleep(50);
    writeSync(writer, `${B}\n`); // the writer has not reopened yet
    closeSync(writer);
    writeFileSync(path, `${C}\n`);
    await r.waitFor(3);
    await r.stop();
    expect(parse(r.lines)).toEqual([
      { text: A, at: `file:${fingerprint(A)}:0` },
      { text: B, at: `file:${fingerprint(A)}:17` },
      { text: C, at: `file:${fingerprint(C)}:0` },
    ]);
  });

  it('handles copy-and-truncate rotation as a truncation', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.ndjson');
    writeFileSync(path, `${A}\n${B}\n`);
    const r = start({ path, follow: true, pollMs: 10 });
    await r.waitFor(2);
    copyFileSync(path, join(dir, 'app.ndjson.1'));
    truncateSync(path, 0);
    appendFileSync(path, `${C}\n`);
    await r.waitFor(3);
    await r.stop();
    expect(parse(r.lines).map((l) => l.text)).toEqual([A, B, C]);
    expect(parse(r.lines)[2]?.at).toBe(`file:${fingerprint(C)}:0`);
  });

  it('waits for a file that does not exist yet', async () => {
    const dir = tempDir();
    const path = join(dir, 'later', 'in.ndjson');
    const r = start({ path, follow: true, pollMs: 10 });
    await sleep(100);
    expect(r.lines).toEqual([]);
    mkdirSync(join(dir, 'later'));
    writeFileSync(path, `${A}\n`);
    await r.waitFor(1);
    await r.stop();
    expect(parse(r.lines).map((l) => l.text)).toEqual([A]);
  });

  it('with --start end reads only lines added after it started', async () => {
    const path = join(tempDir(), 'in.ndjson');
    writeFileSync(path, `${A}\n${B}\n`);
    const r = start({ path, follow: true, start: 'end', pollMs: 10 });
    await sleep(100);
    appendFileSync(path, `${C}\n`);
    await r.waitFor(1);
    await r.stop();
    expect(parse(r.lines)).toEqual([{ text: C, at: `file:${fingerprint(A)}:34` }]);
  });

  it('stops when told to, and saves the checkpoint of what it handed out', async () => {
    const dir = tempDir();
    const path = join(dir, 'in.ndjson');
    const checkpoint = join(dir, 'in.checkpoint');
    writeFileSync(path, `${A}\n${B}\n`);
    const r = start({ path, follow: true, checkpoint, pollMs: 10 });
    await r.waitFor(2);
    await r.stop();
    expect(JSON.parse(readFileSync(checkpoint, 'utf8'))).toEqual({ fingerprint: fingerprint(A), offset: 34 });
    expect(existsSync(`${checkpoint}.tmp`)).toBe(false);
    appendFileSync(path, `${C}\n`);
    const again = start({ path, follow: true, checkpoint, pollMs: 10 });
    await again.waitFor(1);
    await again.stop();
    expect(parse(again.lines).map((l) => l.text)).toEqual([C]);
  });
});
