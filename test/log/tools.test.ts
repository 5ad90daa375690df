import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { CqpError } from '../../src/core/errors.js';
import { HEADER_SIZE, recordSize } from '../../src/log/format.js';
import { logRepair } from '../../src/log/repair.js';
import { logCat, logStat, logVerify, runLogCommand } from '../../src/log/tools.js';
import { openLogWriter } from '../../src/log/writer.js';
import { collector, event, readAll, sleep, tempDir } from './helpers.js';

async function makeLog(count: number, batches = 4): Promise<string> {
  const path = join(tempDir(), 'events.log');
  const w = await openLogWriter(path, { fsync: 'never', warn: () => undefined });
  const per = Math.ceil(count / batches);
  for (let i = 0; i < count; i += per) {
    await w.appendBatch(Array.from({ length: Math.min(per, count - i) }, (_, j) => ({ bytes: event(i + j), position: { source: 'demo:1', n: String(i + j + 1) } })));
    await sleep(3);
  }
  await w.close();
  return path;
}

/** Flips one bit inside the event bytes of record `seq`; returns the record's byte offset. */
async function flip(path: string, seq: number): Promise<number> {
  let at = HEADER_SIZE;
  for (const r of await readAll(path, { until: { seq: seq - 1 } })) at += recordSize(r.bytes.length + Buffer.byteLength(r.position ?? ''));
  const bytes = readFileSync(path);
  bytes[at + 50] = (bytes[at + 50] as number) ^ 1;
  writeFileSync(path, bytes);
  return at;
}

describe('log tools', () => {
  test('cat prints each event as stored, one per line', async () => {
    const path = await makeLog(2000);
    const out = collector();
    expect(await logCat(path, {}, out)).toEqual({ count: 2000 });
    const expected = Array.from({ length: 2000 }, (_, i) => `${event(i)}\n`).join('');
    expect(out.text()).toBe(expected);
  });

  test('cat --meta wraps each event with its seq and ISO append time', async () => {
    const path = await makeLog(40);
    const records = await readAll(path);
    const out = collector();
    await logCat(path, { meta: true, from: { seq: 5 }, until: { seq: 7 } }, out);
    const lines = out.text().trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; time: string; event: unknown });
    expect(lines.map((l) => l.seq)).toEqual([5, 6, 7]);
    expect(lines[0]?.time).toBe(new Date(records[4]?.time as number).toISOString());
    expect(lines[0]?.event).toEqual(JSON.parse(event(4)));
  });

  test('cat stops at a closed downstream quietly and honours backpressure', async () => {
    const path = await makeLog(5000);
    const { Writable } = await import('node:stream');
    let got = 0;
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _e, cb) {
        got += chunk.length;
        setTimeout(cb, 1);
      },
    });
    await logCat(path, {}, slow);
    expect(got).toBe(Buffer.byteLength(Array.from({ length: 5000 }, (_, i) => `${event(i)}\n`).join('')));
    const epipe = new Writable({
      write(_c, _e, cb) {
        const err = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
        cb(err);
      },
    });
    await expect(logCat(path, {}, epipe)).resolves.toBeDefined();
  });

  test('verify passes a good log and names the first bad record of a damaged one', async () => {
    const path = await makeLog(300);
    expect(await logVerify(path)).toEqual({ ok: true, count: 300 });
    const offset = await flip(path, 120);
    expect(await logVerify(path)).toEqual({ ok: false, count: 119, firstBad: { seq: 120, offset, reason: 'record checksum mismatch' } });
  });

  test('repair cuts at the first bad record and drops the index; appends then continue from there', async () => {
    const path = await makeLog(300);
    const offset = await flip(path, 120);
    const size = statSync(path).size;
    const r = await logRepair(path);
    expect(r).toMatchObject({ cut: true, kept: 119, offset, bytes: size - offset, firstLostSeq: 120, reason: 'record checksum mismatch', records: 181 });
    expect(statSync(path).size).toBe(offset);
    expect(() => statSync(`${path}.idx`)).toThrow();
    expect(await logVerify(path)).toEqual({ ok: true, count: 119 });
    expect(await logRepair(path)).toEqual({ cut: false, kept: 119 });
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    expect(w.lastSeq).toBe(119);
    // The positions map now says what the log holds, so a resumed source re-sends the lost events.
    expect(w.applied()).toEqual({ 'demo:1': '119' });
    expect(await w.appendBatch([{ bytes: '{}' }])).toEqual({ firstSeq: 120, lastSeq: 120 });
    await w.close();
  });

  test('repair keeps what it cuts in FILE.cut-<time> beside the log, byte for byte, and says how many records and bytes', async () => {
    const path = await makeLog(300);
    const offset = await flip(path, 120);
    const before = readFileSync(path);
    const out = collector();
    const err = collector();
    expect(await runLogCommand('repair', path, { stdout: out, stderr: err })).toBe(0);
    const saved = readdirSync(dirname(path)).filter((f) => f.startsWith('events.log.cut-'));
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatch(/^events\.log\.cut-\d{8}T\d{6}Z$/);
    const kept = join(dirname(path), saved[0] as string);
    expect(readFileSync(kept).equals(before.subarray(offset))).toBe(true);
    expect(readFileSync(path).equals(before.subarray(0, offset))).toBe(true);
    expect(out.text()).toContain(`cut at byte offset ${offset} (record checksum mismatch): 181 records (seq 120 on), `);
    expect(out.text()).toContain(`(${before.length - offset} bytes), kept in ${kept}; 119 records kept`);
  });

  test('repair counts the cut records even when the bad record\'s head (its length) is damaged', async () => {
    const path = await makeLog(300);
    const offset = await flip(path, 120);
    const bytes = readFileSync(path);
    bytes[offset + 50] = (bytes[offset + 50] as number) ^ 1;
    bytes[offset + 2] = (bytes[offset + 2] as number) ^ 0x40;
    writeFileSync(path, bytes);
    expect(await logRepair(path, { dryRun: true })).toMatchObject({ offset, firstLostSeq: 120, reason: 'record header checksum mismatch', records: 181 });
  });

  test('repair --dry-run says what it would cut and changes nothing', async () => {
    const path = await makeLog(300);
    const offset = await flip(path, 120);
    const files = readdirSync(dirname(path)).sort();
    const before = readFileSync(path);
    const out = collector();
    const err = collector();
    expect(await runLogCommand('repair', path, { dryRun: true, stdout: out, stderr: err })).toBe(0);
    expect(out.text()).toContain(`would cut at byte offset ${offset} (record checksum mismatch): 181 records (seq 120 on), `);
    expect(out.text()).toContain('nothing was changed');
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dirname(path)).sort()).toEqual(files);
    expect(await logVerify(path)).toMatchObject({ ok: false, count: 119 });
  });

  test('repair refuses while a writer holds the log', async () => {
    const path = await makeLog(3);
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await expect(logRepair(path)).rejects.toMatchObject({ code: 'LOCKED' });
    await w.close();
  });

  test('stat gives count, first/last seq and time, size and log id', async () => {
    const path = await makeLog(100);
    const records = await readAll(path);
    const s = await logStat(path);
    expect(s).toMatchObject({
      count: 100,
      firstSeq: 1,
      lastSeq: 100,
      firstTime: records[0]?.time,
      lastTime: records[99]?.time,
      size: statSync(path).size,
      positions: { 'demo:1': '100' },
    });
    expect(s.logId).toMatch(/^[0-9a-f]{32}$/);
  });

  test('runLogCommand prints for people and returns 0 for a good log, 1 for a corrupt one', async () => {
    const path = await makeLog(50);
    const out = collector();
    const err = collector();
    expect(await runLogCommand('verify', path, { stdout: out, stderr: err })).toBe(0);
    expect(out.text()).toContain('ok, 50 records');
    expect(await runLogCommand('stat', path, { stdout: out, stderr: err })).toBe(0);
    expect(out.text()).toMatch(/records\s+50/);
    const offset = await flip(path, 20);
    expect(await runLogCommand('verify', path, { stdout: out, stderr: err })).toBe(1);
    expect(err.text()).toContain(`record 20, byte offset ${offset}`);
    const cat = collector();
    expect(await runLogCommand('cat', path, { stdout: cat, stderr: err })).toBe(1);
    expect(cat.text().split('\n')).toHaveLength(20);
    expect(err.text()).toContain(`record 20 at byte offset ${offset}`);
    expect(await runLogCommand('repair', path, { stdout: out, stderr: err })).toBe(0);
    expect(out.text()).toContain(`cut at byte offset ${offset}`);
    expect(await runLogCommand('verify', path, { stdout: out, stderr: err })).toBe(0);
    await expect(runLogCommand('cat', path, { from: 'soon', stdout: out, stderr: err })).rejects.toBeInstanceOf(CqpError);
  });

  test('an empty log: cat prints nothing, verify passes with 0 records, stat has no first or last', async () => {
    const path = join(tempDir(), 'empty.log');
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await w.close();
    const out = collector();
    expect(await logCat(path, {}, out)).toEqual({ count: 0 });
    expect(out.text()).toBe('');
    expect(await logVerify(path)).toEqual({ ok: true, count: 0 });
    expect(await logStat(path)).toMatchObject({ count: 0, firstSeq: undefined, lastSeq: undefined, size: HEADER_SIZE, positions: {} });
  });
});
