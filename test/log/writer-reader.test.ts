import { appendFileSync, copyFileSync, existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { CqpError } from '../../src/core/errors.js';
import { encodeHeader, encodeRecord, HEADER_SIZE, parseLogPos, recordSize } from '../../src/log/format.js';
import { readLog, readLogApplied, readLogId } from '../../src/log/reader.js';
import { openLogWriter, type FsyncPolicy } from '../../src/log/writer.js';
import { eventually } from '../helpers/eventually.js';
import { event, readAll, readUntilError, sleep, tempDir } from './helpers.js';

function warnings(): { warn: (m: string) => void; list: string[] } {
  const list: string[] = [];
  return { warn: (m) => list.push(m), list };
}

/** Offset of record `seq` in a log whose records all carry `bodyBytes` bytes of position + event. */
function offsetOf(seq: number, bodyBytes: number): number {
  return HEADER_SIZE + (seq - 1) * recordSize(bodyBytes);
}

async function writeEvents(path: string, count: number, batch = 10, opts: { fsync?: FsyncPolicy; indexEveryBytes?: number } = {}): Promise<void> {
  const w = await openLogWriter(path, { fsync: opts.fsync ?? 'batch', warn: () => undefined, ...(opts.indexEveryBytes ? { indexEveryBytes: opts.indexEveryBytes } : {}) });
  const start = w.lastSeq;
  for (let i = 0; i < count; i += batch) {
    const items = [];
    for (let j = i; j < Math.min(count, i + batch); j++) items.push({ bytes: event(1000 + start + j) });
    await w.appendBatch(items);
  }
  await w.close();
}

describe('command log writer and reader', () => {
  test.each<FsyncPolicy>(['always', 'batch', 'never'])('round trip with fsync %s: strings and buffers, with and without positions', async (fsync) => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync, warn: () => undefined });
    expect(w.logId).toMatch(/^[0-9a-f]{32}$/);
    expect(w.lastSeq).toBe(0);
    const r1 = await w.appendBatch([
      { bytes: '{"a":1}', position: { source: 'file:abc', n: '8' } },
      { bytes: Buffer.from('{"b":"grüße"}') },
    ]);
    const r2 = await w.appendBatch([{ bytes: '{"c":3}', position: { source: 'file:abc', n: '16' } }]);
    expect(r1).toEqual({ firstSeq: 1, lastSeq: 2 });
    expect(r2).toEqual({ firstSeq: 3, lastSeq: 3 });
    expect(await w.appendBatch([])).toEqual({ firstSeq: 4, lastSeq: 3 });
    await w.close();
    const records = await readAll(path);
    expect(records.map((r) => [r.seq, r.position, r.bytes.toString('utf8')])).toEqual([
      [1, 'file:abc:8', '{"a":1}'],
      [2, undefined, '{"b":"grüße"}'],
      [3, 'file:abc:16', '{"c":3}'],
    ]);
    for (const r of records) expect(Math.abs(r.time - Date.now())).toBeLessThan(60_000);
    expect(await readLogId(path)).toBe(w.logId);
  });

  test('a batch larger than one write (big events) is stored whole and in order', async () => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    const big = (i: number): string => JSON.stringify({ i, blob: 'é'.repeat(2_500_000 + i) });
    const items = [big(0), '{"small":1}', big(1), big(2), big(3), '{"small":2}'].map((bytes) => ({ bytes }));
    expect(await w.appendBatch(items)).toEqual({ firstSeq: 1, lastSeq: 6 });
    await w.close();
    const records = await readAll(path);
    expect(records.map((r) => r.bytes.toString('utf8'))).toEqual(items.map((i) => i.bytes));
  });

  test('sequence numbers continue without gaps across reopen', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 25, 7);
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    expect(w.lastSeq).toBe(25);
    expect(await w.appendBatch([{ bytes: event(1) }, { bytes: event(2) }])).toEqual({ firstSeq: 26, lastSeq: 27 });
    await w.close();
    const seqs = (await readAll(path)).map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: 27 }, (_, i) => i + 1));
  });

  test('a torn tail is cut with a warning naming the byte offset, and appending goes on after it', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 5, 5);
    const body = Buffer.byteLength(event(1000));
    const fifth = offsetOf(5, body);
    expect(statSync(path).size).toBe(offsetOf(6, body));
    truncateSync(path, fifth + 11);
    // A reader stops quietly before the incomplete record: it is not acknowledged data.
    expect((await readAll(path)).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    const { warn, list } = warnings();
    const w = await openLogWriter(path, { fsync: 'batch', warn });
    expect(list).toHaveLength(1);
    expect(list[0]).toContain(`torn tail at byte offset ${fifth}`);
    expect(w.lastSeq).toBe(4);
    await w.appendBatch([{ bytes: '{"after":"torn"}' }]);
    await w.close();
    const records = await readAll(path);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(records[4]?.bytes.toString()).toBe('{"after":"torn"}');
  });

  test('a zero-filled tail (a crash after the file grew) counts as torn', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 3, 3);
    appendFileSync(path, Buffer.alloc(4096));
    const { warn, list } = warnings();
    const w = await openLogWriter(path, { fsync: 'batch', warn });
    expect(list[0]).toMatch(/torn tail at byte offset \d+ \(4096 bytes/);
    expect(w.lastSeq).toBe(3);
    await w.close();
  });

  test('a flipped byte mid-file: the reader stops there naming seq and offset, the writer refuses', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 100, 10);
    const body = Buffer.byteLength(event(1000));
    const bad = offsetOf(50, body);
    const bytes = readFileSync(path);
    bytes[bad + 40] = (bytes[bad + 40] as number) ^ 0x20;
    writeFileSync(path, bytes);

    const { records, error } = await readUntilError(path);
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 49 }, (_, i) => i + 1));
    expect(error).toBeInstanceOf(CqpError);
    expect((error as CqpError).code).toBe('CORRUPT');
    expect((error as CqpError).message).toContain(`record 50 at byte offset ${bad}`);
    expect((error as CqpError).message).toContain('cqp log repair');

    // The sidecar index lets an open skip what it already checked, so without it the open scans all.
    writeFileSync(`${path}.idx`, 'not an index');
    const err = await openLogWriter(path, { fsync: 'batch', warn: () => undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CqpError);
    expect((err as CqpError).code).toBe('CORRUPT');
    expect((err as CqpError).message).toContain(`record 50 at byte offset ${bad}`);
    // A refused open leaves no lock behind.
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  test('a damaged length field is corruption, not a torn tail', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 10, 10);
    const body = Buffer.byteLength(event(1000));
    const bytes = readFileSync(path);
    bytes.writeUInt32LE(10_000_000, offsetOf(3, body));
    writeFileSync(path, bytes);
    const { records, error } = await readUntilError(path);
    expect(records).toHaveLength(2);
    expect((error as CqpError).message).toContain(`record 3 at byte offset ${offsetOf(3, body)}`);
  });

  test('a second writer fails at once with LOCKED; the lock is free again after close', async () => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    const err = await openLogWriter(path, { fsync: 'batch', warn: () => undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CqpError);
    expect((err as CqpError).code).toBe('LOCKED');
    expect((err as CqpError).message).toContain(`events.log is locked by another writer (pid ${process.pid})`);
    await w.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
    const again = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await again.close();
  });

  test('a FILE.lock left behind decides nothing (the OS holds the lock): it is rewritten with the new pid', async () => {
    const path = join(tempDir(), 'events.log');
    // Even a pid that is running (this process's parent) holds no lock by being named there.
    writeFileSync(`${path}.lock`, `${process.ppid}\n`);
    const { warn, list } = warnings();
    const w = await openLogWriter(path, { fsync: 'batch', warn });
    expect(list).toEqual([]);
    expect(readFileSync(`${path}.lock`, 'utf8').trim()).toBe(String(process.pid));
    await w.close();
  });

  test('from/until by sequence number and by append time (inclusive)', async () => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'never', warn: () => undefined });
    for (let b = 0; b < 4; b++) {
      await w.appendBatch([0, 1, 2].map((i) => ({ bytes: event(b * 3 + i) })));
      await sleep(5);
    }
    await w.close();
    const all = await readAll(path);
    expect(all).toHaveLength(12);
    expect((await readAll(path, { from: { seq: 4 }, until: { seq: 8 } })).map((r) => r.seq)).toEqual([4, 5, 6, 7, 8]);
    expect((await readAll(path, { from: { seq: 12 } })).map((r) => r.seq)).toEqual([12]);
    expect(await readAll(path, { from: { seq: 13 } })).toEqual([]);
    const t2 = all[3]?.time as number;
    const t3 = all[6]?.time as number;
    expect(t3).toBeGreaterThan(t2);
    expect((await readAll(path, { from: { time: t2 }, until: { time: t3 } })).map((r) => r.seq)).toEqual([4, 5, 6, 7, 8, 9]);
    expect((await readAll(path, { until: { time: t2 - 1 } })).map((r) => r.seq)).toEqual([1, 2, 3]);
    // Positions given as text parse to the same bounds.
    expect(parseLogPos('4')).toEqual({ seq: 4 });
    expect(parseLogPos(new Date(t2).toISOString())).toEqual({ time: t2 });
  });

  test('parseLogPos rejects junk with a USAGE error that shows the accepted forms', () => {
    for (const junk of ['', 'yesterday', '12abc', '-3', '2024-13-45T99:99:99Z']) {
      const err = (() => {
        try {
          parseLogPos(junk, '--from');
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err, junk).toBeInstanceOf(CqpError);
      expect((err as CqpError).code).toBe('USAGE');
      expect((err as CqpError).message).toContain('--from');
    }
    expect(parseLogPos('2024-05-30T08:49:46.745Z')).toEqual({ time: Date.parse('2024-05-30T08:49:46.745Z') });
  });

  test('follow sees new appends and waits for a partially written record', async () => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await w.appendBatch([{ bytes: event(1) }, { bytes: event(2) }]);
    const ac = new AbortController();
    const seen: number[] = [];
    const reading = (async () => {
      for await (const batch of readLog(path, { follow: true, signal: ac.signal, pollMs: 10 })) seen.push(...batch.map((r) => r.seq));
    })();
    const until = (n: number): Promise<boolean> => eventually(() => seen.length >= n, { everyMs: 10, what: `the reader to read ${n} records` });
    await until(2);
    await w.appendBatch([{ bytes: event(3) }]);
    await until(3);
    await w.close();
    // Write record 4 by hand in two pieces, as a writer interrupted mid-write would leave it.
    const text = event(4);
    const rec = Buffer.alloc(recordSize(Buffer.byteLength(text)));
    encodeRecord(rec, 0, 4, Date.now(), undefined, 0, text, Buffer.byteLength(text));
    appendFileSync(path, rec.subarray(0, 40));
    await sleep(60);
    expect(seen).toEqual([1, 2, 3]);
    appendFileSync(path, rec.subarray(40));
    await until(4);
    ac.abort();
    await reading;
    expect(seen).toEqual([1, 2, 3, 4]);
  });

  test('follow waits for the log to be created', async () => {
    const path = join(tempDir(), 'later.log');
    const ac = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const batch of readLog(path, { follow: true, signal: ac.signal, pollMs: 10 })) seen.push(...batch.map((r) => r.bytes.toString()));
    })();
    // The reader is already looking for the file (its first open is under way) when the writer creates it.
    expect(existsSync(path)).toBe(false);
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await w.appendBatch([{ bytes: '{"x":1}' }]);
    await eventually(() => seen.length >= 1, { what: 'the follower to read the record appended right after the log was created' });
    ac.abort();
    await reading;
    await w.close();
    expect(seen).toEqual(['{"x":1}']);
  });

  test('follow sees a record appended while it finds the end of the file (no append is missed)', async () => {
    // The writer appends at the moment the follower asks for more: its read may find the end just
    // before the append lands, and the follower must still see that record, though nothing follows it.
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'never', warn: () => undefined });
    await w.appendBatch([{ bytes: event(1) }]);
    const ac = new AbortController();
    const total = 300;
    let seen = 0;
    let appending: Promise<unknown> = Promise.resolve();
    const reading = (async () => {
      for await (const batch of readLog(path, { follow: true, signal: ac.signal, pollMs: 10 })) {
        seen += batch.length;
        if (seen < total) appending = w.appendBatch([{ bytes: event(seen + 1) }]);
      }
    })();
    try {
      await eventually(() => seen >= total, { timeoutMs: 20_000, what: () => `the follower to read all ${total} records (it stopped at ${seen})` });
    } finally {
      ac.abort();
      await reading;
      await appending;
      await w.close();
    }
    expect(seen).toBe(total);
  });

  test('the positions map survives reopen and is readable without the lock', async () => {
    const path = join(tempDir(), 'events.log');
    const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await w.appendBatch([
      { bytes: event(1), position: { source: 'file:a', n: '100' } },
      { bytes: event(2), position: { source: 'file:b', n: '7' } },
    ]);
    await w.appendBatch([{ bytes: event(3), position: { source: 'file:a', n: '250' } }, { bytes: event(4) }]);
    expect(w.applied()).toEqual({ 'file:a': '250', 'file:b': '7' });
    expect(await readLogApplied(path)).toEqual({ 'file:a': '250', 'file:b': '7' });
    await w.close();
    for (const withIndex of [true, false]) {
      if (!withIndex) writeFileSync(`${path}.idx`, '{}');
      const again = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
      expect(again.applied()).toEqual({ 'file:a': '250', 'file:b': '7' });
      await again.close();
    }
  });

  test('the index lets a seek skip what precedes it, but a writer still verifies every record it covers', async () => {
    const path = join(tempDir(), 'events.log');
    const body = Buffer.byteLength(event(1000));
    await writeEvents(path, 300, 20, { indexEveryBytes: 4096 });
    const idx = JSON.parse(readFileSync(`${path}.idx`, 'utf8')) as { entries: unknown[]; last: { seq: number } };
    expect(idx.last.seq).toBe(300);
    expect(idx.entries.length).toBeGreaterThan(5);
    // Damage record 10: the index's checkpoint and entries lie past it.
    const bytes = readFileSync(path);
    bytes[offsetOf(10, body) + 35] = 0;
    writeFileSync(path, bytes);
    expect((await readAll(path, { from: { seq: 250 } })).map((r) => r.seq)[0]).toBe(250);
    expect((await readUntilError(path)).records).toHaveLength(9);
    // With the index, without it, or with a wrong one: the open finds the damage and appends nothing.
    const good = readFileSync(`${path}.idx`, 'utf8');
    for (const idxText of [good, '', good.replace(/"seq":300/, '"seq":299')]) {
      writeFileSync(`${path}.idx`, idxText);
      const err = await openLogWriter(path, { fsync: 'batch', warn: () => undefined }).catch((e: unknown) => e);
      expect((err as CqpError).code, idxText.slice(0, 40)).toBe('CORRUPT');
      expect((err as CqpError).message).toContain(`record 10 at byte offset ${offsetOf(10, body)}`);
      expect(readFileSync(path).equals(bytes)).toBe(true);
    }
  });

  test('an index written for another history of the log (same log id, same last record) is ignored, not believed', async () => {
    const dir = tempDir();
    const { header } = encodeHeader();
    const record = (seq: number, position: string | undefined, data: string): Buffer => {
      const posLen = position === undefined ? 0 : Buffer.byteLength(position);
      const out = Buffer.alloc(recordSize(posLen + data.length));
      encodeRecord(out, 0, seq, 1_700_000_000_000, position, posLen, data, data.length);
      return out;
    };
    // Two copies of one log that went apart at record 1 and happen to end with the same record 2.
    const last = record(2, undefined, event(2));
    const ours = join(dir, 'ours.log');
    const theirs = join(dir, 'theirs.log');
    writeFileSync(ours, Buffer.concat([header, record(1, 'file:a:1', event(1)), last]));
    writeFileSync(theirs, Buffer.concat([header, record(1, 'file:a:7', event(7)), last]));
    const w = await openLogWriter(theirs, { fsync: 'batch', warn: () => undefined });
    expect(w.applied()).toEqual({ 'file:a': '7' });
    await w.close();
    copyFileSync(`${theirs}.idx`, `${ours}.idx`);
    const reopened = await openLogWriter(ours, { fsync: 'batch', warn: () => undefined });
    expect(reopened.applied()).toEqual({ 'file:a': '1' });
    expect(reopened.lastSeq).toBe(2);
    await reopened.close();
  });

  test('an index ahead of the log (an older copy restored) or left by a log since replaced is not believed', async () => {
    const dir = tempDir();
    const path = join(dir, 'events.log');
    const body = Buffer.byteLength(event(1000));
    await writeEvents(path, 200, 20);
    const index = readFileSync(`${path}.idx`);
    // Restored from a copy taken at record 120: the index says 200.
    truncateSync(path, offsetOf(121, body));
    writeFileSync(`${path}.idx`, index);
    const restored = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    expect(restored.lastSeq).toBe(120);
    await restored.appendBatch([{ bytes: event(1), position: { source: 'file:a', n: '5' } }]);
    await restored.close();
    expect((await readAll(path)).map((r) => r.seq)).toEqual(Array.from({ length: 121 }, (_, i) => i + 1));
    // Replaced by a new log (another log id) at the same path; the old index is still there.
    const old = readFileSync(`${path}.idx`);
    rmSync(path);
    const fresh = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    await fresh.appendBatch([{ bytes: event(2), position: { source: 'file:b', n: '1' } }]);
    await fresh.close();
    writeFileSync(`${path}.idx`, old);
    const again = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
    expect(again.lastSeq).toBe(1);
    expect(again.applied()).toEqual({ 'file:b': '1' });
    await again.close();
  });

  test('a missing or wrong index is tolerated: same lastSeq, positions and seeks', async () => {
    const path = join(tempDir(), 'events.log');
    await writeEvents(path, 200, 25, { indexEveryBytes: 2048 });
    const good = readFileSync(`${path}.idx`, 'utf8');
    const cases = ['', '{"format":1}', good.replace(/"end":\d+/, '"end":999999999'), good.replace(/\[(\d+),(\d+),/, (_m, s: string, o: string) => `[${s},${Number(o) + 3},`)];
    for (const text of cases) {
      writeFileSync(`${path}.idx`, text);
      expect((await readAll(path, { from: { seq: 150 } })).map((r) => r.seq)).toEqual(Array.from({ length: 51 }, (_, i) => 150 + i));
      const w = await openLogWriter(path, { fsync: 'batch', warn: () => undefined });
      expect(w.lastSeq).toBe(200);
      await w.close();
    }
  });

  test('a file that is not a command log is refused and left as it was; a missing folder is created', async () => {
    const dir = tempDir();
    for (const text of ['{"a":1}\n', '{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n']) {
      const path = join(dir, 'events.ndjson');
      writeFileSync(path, text);
      const err = await openLogWriter(path, { fsync: 'batch', warn: () => undefined }).catch((e: unknown) => e);
      expect((err as CqpError).code).toBe('CORRUPT');
      expect((err as CqpError).message).toContain('not a cqp command log');
      expect(readFileSync(path, 'utf8')).toBe(text);
      await expect(readAll(path)).rejects.toMatchObject({ code: 'CORRUPT' });
    }
    const nested = join(dir, 'data', 'deeper', 'events.log');
    const w = await openLogWriter(nested, { fsync: 'batch', warn: () => undefined });
    await w.appendBatch([{ bytes: '{}' }]);
    await w.close();
    expect((await readAll(nested)).map((r) => r.seq)).toEqual([1]);
    await expect(readAll(join(dir, 'missing.log'))).rejects.toMatchObject({ code: 'IO' });
  });
});
