import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { collect, cqpAsync, parseLines, rssMiB, shellCommand, spawnCli } from '../helpers/cli.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'cqp-ndjson-'));
const good = '{"id":1,"v":"a"}\n{"id":2,"v":"b"}\n';

describe('bad lines under each --on-error mode', () => {
  const input = '{"id":1}\nnot json\n[1,2]\n{"id":4}\n';

  it('fail: prints stdin:LINE with the line, exits 1, keeps the events before it', async () => {
    const r = await cqpAsync(['map', 'e.ok = true'], { bin: 'filter', input });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^stdin:2: invalid JSON: .*\n {2}not json\n$/);
    expect(parseLines(r.stdout)).toEqual([{ id: 1, ok: true }]);
  });

  it('skip: warns per bad line and carries on', async () => {
    const r = await cqpAsync(['map', 'e.ok = true', '--on-error', 'skip'], { bin: 'filter', input });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('stdin:2: invalid JSON');
    expect(r.stderr).toContain('stdin:3: not a JSON object (got an array)');
    expect(parseLines(r.stdout)).toEqual([{ id: 1, ok: true }, { id: 4, ok: true }]);
  });

  it('dead-letter: appends line, error and raw text to the file', async () => {
    const file = join(tmp(), 'dead.ndjson');
    const r = await cqpAsync(['where', 'true', '--on-error', 'dead-letter', '--dead-letter', file], { bin: 'filter', input });
    expect(r.status).toBe(0);
    const dead = parseLines(readFileSync(file, 'utf8'));
    expect(dead.map((d) => [d.line, d.raw])).toEqual([[2, 'not json'], [3, '[1,2]']]);
    expect(String(dead[0]?.error)).toContain('invalid JSON');
    expect(r.stdout).toBe('{"id":1}\n{"id":4}\n');
  });

  it('dead-letter without a file is a usage error', async () => {
    const r = await cqpAsync(['where', 'true', '--on-error', 'dead-letter'], { bin: 'filter', input });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--dead-letter FILE');
  });

  it.each([
    ['42', 'a number'],
    ['"text"', 'a string'],
    ['null', 'null'],
    ['true', 'a boolean'],
  ])('a non-object line %s is a bad line', async (line, what) => {
    const r = await cqpAsync(['enrich'], { bin: 'filter', input: `${line}\n` });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`stdin:1: not a JSON object (got ${what.replace(/^an? /, '')})`);
  });

  it('an exception in a user expression follows the policy', async () => {
    const r = await cqpAsync(['map', 'e.x = e.missing.deep', '--on-error', 'skip'], { bin: 'filter', input: good });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('stdin:1: map: Cannot read properties of undefined');
    expect(r.stdout).toBe('');
  });
});

describe('input edge cases', () => {
  it.each([
    ['empty input', '', ''],
    ['only empty lines', '\n\n\r\n', ''],
    ['CRLF line ends', '{"a":1}\r\n{"a":2}\r\n', '{"a":1}\n{"a":2}\n'],
    ['a BOM at the start', '\uFEFF{"a":1}\n{"a":2}\n', '{"a":1}\n{"a":2}\n'],
    ['no newline at the end', '{"a":1}\n{"a":2}', '{"a":1}\n{"a":2}\n'],
    ['empty lines between events', '{"a":1}\n\n\n{"a":2}\n', '{"a":1}\n{"a":2}\n'],
    ['multi-byte text', '{"a":"héllo ☃ 𝄞"}\n', '{"a":"héllo ☃ 𝄞"}\n'],
  ])('%s', async (_name, input, expected) => {
    const r = await cqpAsync(['where', 'true'], { bin: 'filter', input });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(expected);
  });

  it('keeps a multi-byte character split across read chunks', async () => {
    const child = spawnCli('filter', ['map', 'e.n = e.s.length']);
    const done = collect(child);
    const bytes = Buffer.from('{"s":"a☃𝄞b"}\n');
    const cut = bytes.indexOf(Buffer.from('☃')) + 1;
    child.stdin?.write(bytes.subarray(0, cut));
    await sleep(100);
    child.stdin?.write(bytes.subarray(cut, cut + 3));
    await sleep(100);
    child.stdin?.end(bytes.subarray(cut + 3));
    const r = await done;
    expect(r.status).toBe(0);
    expect(parseLines(r.stdout)).toEqual([{ s: 'a☃𝄞b', n: 5 }]);
  });

  const big = `{"big":"${'x'.repeat(20 * 1024 * 1024)}"}`;

  it('a 20 MB line over --max-line-bytes is a bad line and the stream goes on', async () => {
    const r = await cqpAsync(['where', 'true', '--on-error', 'skip'], { bin: 'filter', input: `{"a":1}\n${big}\n{"a":3}\n` });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('stdin:2: line is 20971530 bytes, longer than --max-line-bytes 16777216');
    expect(r.stdout).toBe('{"a":1}\n{"a":3}\n');
  });

  it('a 20 MB line under a raised --max-line-bytes passes whole', async () => {
    const r = await cqpAsync(['where', 'true', '--max-line-bytes', String(32 * 1024 * 1024)], { bin: 'filter', input: `${big}\n{"a":2}\n` });
    expect(r.status).toBe(0);
    expect(r.stdout.length).toBe(big.length + 1 + 8);
  });

  it('an oversized line fails by default, naming the line', async () => {
    const r = await cqpAsync(['map', 'e.x = 1'], { bin: 'filter', input: `{"a":1}\n${big}\n` });
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n')[0]).toBe('stdin:2: line is 20971530 bytes, longer than --max-line-bytes 16777216');
    expect(r.stdout).toBe('{"a":1,"x":1}\n');
  });
});

describe('JSONTestSuite cases wrapped as {"v": CASE}', () => {
  const dir = fileURLToPath(new URL('../fixtures/json-test-suite/test_parsing/', import.meta.url));
  const cases = readdirSync(dir)
    .filter((f) => /^[yn]_/.test(f))
    .map((f) => ({ name: f, text: readFileSync(join(dir, f)) }))
    .filter((c) => !c.text.includes(10) && !c.text.includes(13));

  it('accepts every y_ case and rejects every n_ case, never crashing', async () => {
    const input = Buffer.concat(cases.map((c) => Buffer.concat([Buffer.from('{"v": '), c.text, Buffer.from('}\n')])));
    const deadLetter = join(tmp(), 'dead.ndjson');
    const r = await cqpAsync(['where', 'true', '--on-error', 'dead-letter', '--dead-letter', deadLetter], { bin: 'filter', input });
    expect(r.status).toBe(0);
    const rejected = new Set(parseLines(readFileSync(deadLetter, 'utf8')).map((d) => d.line));
    const wrong = cases.filter((c, i) => rejected.has(i + 1) !== c.name.startsWith('n_')).map((c) => c.name);
    // n_ cases whose bytes are valid once wrapped (e.g. a lone value that only breaks at top level) are none.
    expect(wrong).toEqual([]);
  });
});

describe('pipes and signals', () => {
  it('| head -1 exits 0 with nothing on stderr', async () => {
    const script = `set -o pipefail; ${shellCommand('source', 'demo --count 200000')} | ${shellCommand('filter', "map 'e.x = 1'")} | head -1`;
    const r = await collect(spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(parseLines(r.stdout)).toHaveLength(1);
  });

  it('SIGTERM mid-stream: exits 0 and loses none of the events already read', async () => {
    const child = spawnCli('filter', ['map', 'e.seen = true']);
    const done = collect(child);
    let n = 0;
    let received = 0;
    child.stdout?.on('data', (d: Buffer) => {
      for (const b of d) if (b === 10) received++;
    });
    while (received < 5000) {
      const lines: string[] = [];
      for (let i = 0; i < 500; i++) lines.push(JSON.stringify({ n: n++ }));
      child.stdin?.write(`${lines.join('\n')}\n`);
      await sleep(20);
    }
    child.kill('SIGTERM');
    const r = await done;
    expect(r.status).toBe(0);
    const out = parseLines(r.stdout);
    expect(out.length).toBeGreaterThanOrEqual(5000);
    expect(out.map((e) => e.n)).toEqual(Array.from({ length: out.length }, (_, i) => i));
  });

  it('a slow consumer throttles the producer: memory stays bounded', async () => {
    const source = spawnCli('source', ['demo', '--count', '0']);
    const filter = spawnCli('filter', ['map', 'e.x = 1']);
    source.stdout?.pipe(filter.stdin as NodeJS.WritableStream);
    let bytes = 0;
    filter.stdout?.on('data', (d: Buffer) => {
      bytes += d.length;
      filter.stdout?.pause();
      setTimeout(() => filter.stdout?.resume(), 20);
    });
    const peaks = { source: 0, filter: 0 };
    for (let i = 0; i < 20; i++) {
      await sleep(150);
      peaks.source = Math.max(peaks.source, rssMiB(source.pid as number));
      peaks.filter = Math.max(peaks.filter, rssMiB(filter.pid as number));
    }
    source.kill('SIGKILL');
    filter.kill('SIGKILL');
    expect(bytes).toBeGreaterThan(0);
    // Unbounded buffering would grow by hundreds of MB in 3 s at demo speed.
    expect(peaks.source).toBeLessThan(150);
    expect(peaks.filter).toBeLessThan(150);
  });
});

describe('sharing pipes with other programs', () => {
  it('a sink leaves its stdout blocking, so `tee >(cqp-sink …) | next` keeps working', async () => {
    const script = `sleep 2 | ${shellCommand('sink', 'file --path /dev/null')} & pid=$!; sleep 1; grep flags /proc/$pid/fdinfo/1; wait`;
    const r = await collect(spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const flags = Number.parseInt(/flags:\s+(\d+)/.exec(r.stdout)?.[1] ?? 'x', 8);
    expect(Number.isNaN(flags)).toBe(false);
    expect(flags & 0o4000).toBe(0);
  });
});

describe('memory over a long stream', () => {
  it('a filter and a sink stay bounded over 300k events (120 MB): nothing is kept per chunk', async () => {
    const source = spawnCli('source', ['demo', '--count', '300000']);
    const filter = spawnCli('filter', ['map', 'e.x = 1']);
    const sink = spawnCli('sink', ['file', '--path', '/dev/null']);
    source.stdout?.pipe(filter.stdin as NodeJS.WritableStream);
    filter.stdout?.pipe(sink.stdin as NodeJS.WritableStream);
    const done = Promise.all([collect(source), collect(filter), collect(sink)]);
    const peaks = { filter: 0, sink: 0 };
    let finished = false;
    void done.then(() => (finished = true));
    while (!finished) {
      for (const [name, child] of [['filter', filter], ['sink', sink]] as const) {
        try {
          peaks[name] = Math.max(peaks[name], rssMiB(child.pid as number));
        } catch {
          // Exited between two samples.
        }
      }
      await sleep(100);
    }
    const [, f, s] = await done;
    expect(f.status).toBe(0);
    expect(s.status).toBe(0);
    // Keeping each chunk alive would take the stream's size (120 MB) on top of the ~60 MB a Node process needs.
    expect(peaks.filter).toBeLessThan(150);
    expect(peaks.sink).toBeLessThan(150);
  });
});
