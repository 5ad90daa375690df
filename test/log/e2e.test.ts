import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { splitStamp } from '../../src/core/position.js';
import { readLogApplied, readLogTail } from '../../src/log/reader.js';
import { BIN, cqp, shellCommand } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { sleep, tempDir } from './helpers.js';



function sh(script: string, cwd: string): SpawnSyncReturns<string> {
  return spawnSync('sh', ['-c', script], { cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
}

const source = (args: string): string => shellCommand('source', args);
const sink = (args: string): string => shellCommand('sink', args);

describe('command log through the built CLI', () => {
  test('demo | cqp-sink log, then cat, verify, stat; a re-run appends nothing twice', () => {
    const dir = tempDir();
    const run = sh(`${source('demo --count 3000')} | ${sink('log --path data/events.log')}`, dir);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const expected = sh(source('demo --count 3000'), dir).stdout.trimEnd().split('\n').map((l) => splitStamp(l).text);
    const cat = cqp(['log', 'cat', 'data/events.log'], { cwd: dir });
    expect(cat.status).toBe(0);
    expect(cat.stdout.trimEnd().split('\n')).toEqual(expected);

    const again = sh(`${source('demo --count 3500')} | ${sink('log --path data/events.log')}`, dir);
    expect(again.status).toBe(0);
    const verify = cqp(['log', 'verify', 'data/events.log'], { cwd: dir });
    expect(verify.status).toBe(0);
    expect(verify.stdout).toContain('ok, 3500 records');
    const stat = cqp(['log', 'stat', 'data/events.log'], { cwd: dir });
    expect(stat.status).toBe(0);
    expect(stat.stdout).toMatch(/records\s+3500/);

    const meta = cqp(['log', 'cat', 'data/events.log', '--meta', '--from', '3000', '--until', '3001'], { cwd: dir });
    const lines = meta.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; time: string; event: unknown });
    expect(lines.map((l) => l.seq)).toEqual([3000, 3001]);
    expect(lines[0]?.event).toEqual(JSON.parse(expected[2999] as string));
    expect(Number.isNaN(Date.parse(lines[0]?.time ?? ''))).toBe(false);
  });

  test('cqp log verify exits 1 naming the bad record; repair cuts it; verify then exits 0', () => {
    const dir = tempDir();
    expect(sh(`${source('demo --count 500')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    const path = join(dir, 'events.log');
    const bytes = readFileSync(path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] as number) ^ 0x04;
    writeFileSync(path, bytes);
    const verify = cqp(['log', 'verify', 'events.log'], { cwd: dir });
    expect(verify.status).toBe(1);
    expect(verify.stderr).toMatch(/CORRUPT at record \d+, byte offset \d+/);
    const cat = cqp(['log', 'cat', 'events.log'], { cwd: dir });
    expect(cat.status).toBe(1);
    expect(cat.stderr).toContain('cqp log repair');
    // The index covers the damaged record: the append is refused all the same.
    const appendRefused = sh(`${source('demo --count 600')} | ${sink('log --path events.log')}`, dir);
    expect(appendRefused.status).toBe(1);
    expect(appendRefused.stderr).toContain('corrupt');
    const repair = cqp(['log', 'repair', 'events.log'], { cwd: dir });
    expect(repair.status).toBe(0);
    expect(repair.stdout).toMatch(/cut at byte offset \d+/);
    expect(cqp(['log', 'verify', 'events.log'], { cwd: dir }).status).toBe(0);
    // The demo source re-sends what the cut removed; the log ends whole and in order.
    expect(sh(`${source('demo --count 600')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    const expected = sh(source('demo --count 600'), dir).stdout.trimEnd().split('\n').map((l) => splitStamp(l).text);
    expect(cqp(['log', 'cat', 'events.log'], { cwd: dir }).stdout.trimEnd().split('\n')).toEqual(expected);
  });

  test('cqp-source log --follow streams stamped events as they are appended and exits 0 on SIGTERM', async () => {
    const dir = tempDir();
    const follower = spawn(process.execPath, [BIN.source, 'log', '--path', 'events.log', '--follow'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    follower.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const exited = new Promise<number | null>((r) => follower.on('close', r));
    // The log does not exist yet: the follower waits for it.
    expect(sh(`${source('demo --count 100')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    await eventually(() => out.split('\n').length > 100, { everyMs: 20, what: 'the follower to print 100 events' });
    expect(sh(`${source('demo --count 150')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    await eventually(() => out.split('\n').length > 150, { everyMs: 20, what: 'the follower to print 150 events' });
    follower.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = out.trimEnd().split('\n').map((l) => splitStamp(l));
    const logId = (await readLogTail(join(dir, 'events.log'))).logId;
    expect(lines.map((l) => l.position && `${l.position.source}:${l.position.n}`)).toEqual(Array.from({ length: 150 }, (_, i) => `log:${logId}:${i + 1}`));
    const expected = sh(source('demo --count 150'), dir).stdout.trimEnd().split('\n').map((l) => splitStamp(l).text);
    expect(lines.map((l) => l.text)).toEqual(expected);
  });

  test('cqp-source log --follow --until SEQ ends at that record, even when it is the last one appended', async () => {
    const dir = tempDir();
    const follower = spawn(process.execPath, [BIN.source, 'log', '--path', 'events.log', '--follow', '--until', '120'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    follower.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const exited = new Promise<number | null>((r) => follower.on('close', r));
    expect(sh(`${source('demo --count 100')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    // The second run appends seqs 101–120: the bound is the very last record, no later one will come.
    expect(sh(`${source('demo --count 120')} | ${sink('log --path events.log')}`, dir).status).toBe(0);
    expect(await exited).toBe(0);
    expect(out.trimEnd().split('\n')).toHaveLength(120);
  });

  test('a second cqp-sink log on the same log fails at once with LOCKED naming the first pid', async () => {
    const dir = tempDir();
    const first = spawn(process.execPath, [BIN.sink, 'log', '--path', 'events.log'], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((r) => first.on('exit', r));
    first.stdin.write('{"a":1}\n');
    await eventually(() => existsSync(join(dir, 'events.log.lock')), { everyMs: 20, what: 'the first writer to take the lock' });
    const second = sh(`echo '{"b":2}' | ${sink('log --path events.log')}`, dir);
    expect(second.status).toBe(1);
    expect(second.stderr).toContain(`events.log is locked by another writer (pid ${first.pid})`);
    first.stdin.end();
    expect(await exited).toBe(0);
    expect(cqp(['log', 'cat', 'events.log'], { cwd: dir }).stdout).toBe('{"a":1}\n');
  });

  test('kill -9 at random moments while the input grows, then a full run: every event exactly once, in order', async () => {
    const dir = tempDir();
    const count = 40_000;
    const initial = 10_000;
    const input = sh(source(`demo --count ${count} --seed 3`), dir).stdout.trimEnd().split('\n').map((l) => splitStamp(l).text);
    const inPath = join(dir, 'in.ndjson');
    writeFileSync(inPath, `${input.slice(0, initial).join('\n')}\n`);
    const log = join(dir, 'events.log');
    // One uninterrupted run tells how many log bytes an event takes; each kill then lands when the
    // log has grown a random part of the way to holding all input so far, or during start-up.
    expect(sh(`${source('file --path in.ndjson')} | ${sink('log --path probe.log')}`, dir).status).toBe(0);
    const perEvent = statSync(join(dir, 'probe.log')).size / initial;
    const sizeOf = (): number => (existsSync(log) ? statSync(log).size : 0);
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const rounds = 12;
    const cuts: number[] = [];
    let written = initial;
    for (let round = 0; round < rounds; round++) {
      if (round > 0) {
        const more = Math.ceil((count - initial) / (rounds - 1));
        appendFileSync(inPath, `${input.slice(written, written + more).join('\n')}\n`);
        written = Math.min(count, written + more);
      }
      // Half the rounds resume the source from the log's positions, as `cqp run` does; the others
      // re-read from the start and rely on the sink skipping what the log holds.
      let resume = '';
      if (round % 2 === 1) {
        const applied = await readLogApplied(log).catch(() => ({}));
        resume = ` --resume '${JSON.stringify(applied)}'`;
      }
      const child = spawn('sh', ['-c', `${source(`file --path in.ndjson${resume}`)} | ${sink('log --path events.log')}`], {
        cwd: dir,
        detached: true,
        stdio: 'ignore',
      });
      let done = false;
      const exited = new Promise<void>((r) =>
        child.on('exit', () => {
          done = true;
          r();
        }),
      );
      if (round % 4 === 0) await sleep(random() * 300);
      else {
        const from = sizeOf();
        const target = from + (perEvent * written - from) * (0.1 + random() * 0.8);
        await eventually(() => done || sizeOf() >= target, { everyMs: 2, what: `the log to grow to ${Math.round(target)} bytes` });
      }
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // The whole pipeline finished before the kill.
      }
      await exited;
      cuts.push(await readLogTail(log).then((t) => t.lastSeq, () => 0));
    }
    expect(written).toBe(count);
    // The kills must have landed mid-stream for this test to mean anything.
    const midway = cuts.filter((n, i) => n > 0 && n < Math.min(count, initial + i * Math.ceil((count - initial) / (rounds - 1))));
    expect(midway.length, `records after each kill: ${cuts.join(' ')}`).toBeGreaterThan(5);
    const final = sh(`${source('file --path in.ndjson')} | ${sink('log --path events.log')}`, dir);
    expect(final.stderr).not.toContain('cqp:');
    expect(final.status).toBe(0);
    const verify = cqp(['log', 'verify', 'events.log'], { cwd: dir });
    expect(verify.stdout).toContain(`ok, ${count} records`);
    const cat = cqp(['log', 'cat', 'events.log'], { cwd: dir });
    expect(cat.stdout.trimEnd().split('\n')).toEqual(input);
  });
});
