import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { HEADER_SIZE, RECORD_OVERHEAD } from '../../src/log/format.js';
import { cqp, shellCommand } from '../helpers/cli.js';
import { tempDir } from './helpers.js';


function sh(script: string, cwd: string): SpawnSyncReturns<string> {
  return spawnSync('sh', ['-c', script], { cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
}

const source = (args: string): string => shellCommand('source', args);
const sink = (args: string): string => shellCommand('sink', args);

/** Byte offset of record `seq`, found by walking the record lengths from the file header. */
function offsetOf(bytes: Buffer, seq: number): number {
  let at = HEADER_SIZE;
  for (let s = 1; s < seq; s++) at += RECORD_OVERHEAD + bytes.readUInt32LE(at);
  return at;
}

/** A log of 3000 demo events written by `cqp-sink log` (so with its index), with record 976's event bytes damaged. */
function damagedLog(): { dir: string; path: string; bad: number; before: Buffer; index: string } {
  const dir = tempDir();
  const write = sh(`${source('demo --count 3000')} | ${sink('log --path events.log')}`, dir);
  expect(write.status, write.stderr).toBe(0);
  const path = join(dir, 'events.log');
  expect(existsSync(`${path}.idx`)).toBe(true);
  const bytes = readFileSync(path);
  const bad = offsetOf(bytes, 976);
  bytes[bad + 60] = (bytes[bad + 60] as number) ^ 0x01;
  writeFileSync(path, bytes);
  return { dir, path, bad, before: bytes, index: readFileSync(`${path}.idx`, 'utf8') };
}

describe('a log corrupt in the middle, with an index that covers the damage', () => {
  test('an append is refused naming the seq and offset (exit 1, log unchanged); verify and repair find the same record', () => {
    const { dir, path, bad, before, index } = damagedLog();
    const idx = JSON.parse(index) as { last: { seq: number } };
    expect(idx.last.seq).toBe(3000);

    const append = sh(`${source('demo --count 3100')} | ${sink('log --path events.log')}`, dir);
    expect(append.status, append.stderr).toBe(1);
    expect(append.stderr).toContain(`record 976 at byte offset ${bad} is corrupt`);
    expect(readFileSync(path).equals(before)).toBe(true);

    const verify = cqp(['log', 'verify', 'events.log'], { cwd: dir });
    expect(verify.status).toBe(1);
    expect(verify.stderr).toContain(`CORRUPT at record 976, byte offset ${bad}`);

    const repair = cqp(['log', 'repair', 'events.log'], { cwd: dir });
    expect(repair.status, repair.stderr).toBe(0);
    expect(repair.stdout).toContain(`cut at byte offset ${bad}`);
    expect(repair.stdout).toContain('975 records kept');
    expect(readFileSync(path).equals(before.subarray(0, bad))).toBe(true);
  });

  test('readers stop at the bad record with an error naming its seq and offset', () => {
    const { dir, bad } = damagedLog();
    for (const [bin, args] of [
      ['cqp', ['log', 'cat', 'events.log']],
      ['source', ['log', '--path', 'events.log']],
    ] as const) {
      const r = cqp([...args], { bin, cwd: dir });
      expect(r.status, `${bin} ${args.join(' ')}`).toBe(1);
      expect(r.stderr).toContain(`record 976 at byte offset ${bad} is corrupt`);
      expect(r.stdout.trimEnd().split('\n')).toHaveLength(975);
    }
  });
});
