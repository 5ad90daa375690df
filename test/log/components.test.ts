import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { isExactlyOnce, type SinkEvent, type SourceBatch, type StageContext } from '../../src/core/component.js';
import { createPolicy } from '../../src/core/policy.js';
import { splitStamp, type Position, type PositionMap } from '../../src/core/position.js';
import { readLogId } from '../../src/log/reader.js';
import logSink from '../../src/sinks/log.js';
import logSource from '../../src/sources/log.js';
import { eventually } from '../helpers/eventually.js';
import { event, readAll, sleep, tempDir } from './helpers.js';

function context(cwd: string, signal = new AbortController().signal): StageContext {
  const warn = (): void => undefined;
  return { policy: createPolicy({ mode: 'fail', warn }), warn, signal, cwd };
}

function sinkEvent(text: string, no: number, position?: Position): SinkEvent {
  return { text, no, position, event: () => JSON.parse(text) as Record<string, unknown> };
}

async function collect(batches: AsyncIterable<SourceBatch>): Promise<string[]> {
  const lines: string[] = [];
  for await (const b of batches) lines.push(...b.lines);
  return lines;
}

async function sourceLines(cwd: string, options: Record<string, unknown>, resume: PositionMap = {}, signal?: AbortSignal): Promise<string[]> {
  const opts = logSource.options.parse(options);
  const instance = await logSource.create(opts, { ...context(cwd, signal), resume });
  return collect(instance.batches());
}

describe('log sink and source', () => {
  test('every example parses, and the option defaults are as documented', () => {
    for (const e of logSink.examples) expect(() => logSink.options.parse(e)).not.toThrow();
    for (const e of logSource.examples) expect(() => logSource.options.parse(e)).not.toThrow();
    expect(logSink.options.parse({ path: 'x' })).toEqual({ path: 'x', fsync: 'batch' });
    expect(() => logSink.options.parse({ path: 'x', fsync: 'sometimes' })).toThrow();
    expect(() => logSink.options.parse({})).toThrow();
    expect(isExactlyOnce(logSink)).toBe(true);
    expect(logSource.resumable).toBe(true);
  });

  test('the sink appends batches (path relative to cwd) and reports the positions it holds', async () => {
    const dir = tempDir();
    const sink = await logSink.create(logSink.options.parse({ path: 'events.log' }), context(dir));
    await sink.write([sinkEvent(event(1), 1, { source: 'file:f', n: '10' }), sinkEvent(event(2), 2, { source: 'file:f', n: '20' })]);
    await sink.write([sinkEvent(event(3), 3, undefined)]);
    expect(sink.applied?.()).toEqual({ 'file:f': '20' });
    await sink.close();
    const again = await logSink.create(logSink.options.parse({ path: 'events.log', fsync: 'always' }), context(dir));
    expect(again.applied?.()).toEqual({ 'file:f': '20' });
    await again.close();
    const records = await readAll(join(dir, 'events.log'));
    expect(records.map((r) => r.bytes.toString())).toEqual([event(1), event(2), event(3)]);
    expect(records.map((r) => r.position)).toEqual(['file:f:10', 'file:f:20', undefined]);
  });

  test('the source stamps each event with log:<logId>:<seq>, honours --from/--until and resumes after a stored position', async () => {
    const dir = tempDir();
    const sink = await logSink.create(logSink.options.parse({ path: 'events.log' }), context(dir));
    for (let b = 0; b < 3; b++) {
      await sink.write(Array.from({ length: 4 }, (_, i) => sinkEvent(event(b * 4 + i), b * 4 + i + 1)));
      await sleep(5);
    }
    await sink.close();
    const path = join(dir, 'events.log');
    const source = `log:${await readLogId(path)}`;

    const all = await sourceLines(dir, { path: 'events.log' });
    expect(all).toHaveLength(12);
    const first = splitStamp(all[0] as string);
    expect(first.text).toBe(event(0));
    expect(first.position).toEqual({ source, n: '1' });
    expect(all.map((l) => splitStamp(l).position?.n)).toEqual(Array.from({ length: 12 }, (_, i) => String(i + 1)));

    const mid = await sourceLines(dir, { path: 'events.log', from: '3', until: '6' });
    expect(mid.map((l) => splitStamp(l).text)).toEqual([2, 3, 4, 5].map((i) => event(i)));

    const resumed = await sourceLines(dir, { path: 'events.log' }, { [source]: '9', 'log:other': '1' });
    expect(resumed.map((l) => splitStamp(l).position?.n)).toEqual(['10', '11', '12']);
    // Part of the outputs made from event 9 applied: resume at 9 (the sink skips what it holds).
    const partial = await sourceLines(dir, { path: 'events.log' }, { [source]: '9.1' });
    expect(partial.map((l) => splitStamp(l).position?.n)).toEqual(['9', '10', '11', '12']);
    // A stored position of another log does not move this one.
    expect(await sourceLines(dir, { path: 'events.log' }, { 'log:0000': '11' })).toHaveLength(12);

    const records = await readAll(path);
    const t2 = new Date(records[4]?.time as number).toISOString();
    expect((await sourceLines(dir, { path: 'events.log', from: t2 })).map((l) => splitStamp(l).position?.n)[0]).toBe('5');
    expect((await sourceLines(dir, { path: 'events.log', from: t2 }, { [source]: '2' })).map((l) => splitStamp(l).position?.n)[0]).toBe('5');
    expect((await sourceLines(dir, { path: 'events.log', from: t2 }, { [source]: '6' })).map((l) => splitStamp(l).position?.n)[0]).toBe('7');
  });

  test('the source rejects a junk --from before reading', async () => {
    const dir = tempDir();
    await expect(sourceLines(dir, { path: 'events.log', from: 'last tuesday' })).rejects.toMatchObject({ code: 'USAGE' });
  });

  test('the source follows appends until its signal aborts', async () => {
    const dir = tempDir();
    const ac = new AbortController();
    const sink = await logSink.create(logSink.options.parse({ path: 'events.log' }), context(dir));
    await sink.write([sinkEvent(event(1), 1)]);
    const opts = logSource.options.parse({ path: 'events.log', follow: true });
    const instance = await logSource.create(opts, { ...context(dir, ac.signal), resume: {} });
    const seen: string[] = [];
    const reading = (async () => {
      for await (const b of instance.batches()) seen.push(...b.lines.map((l) => splitStamp(l).text));
    })();
    await eventually(() => seen.length >= 1, { everyMs: 10, what: 'the follower to read event 1' });
    await sink.write([sinkEvent(event(2), 2), sinkEvent(event(3), 3)]);
    await eventually(() => seen.length >= 3, { everyMs: 10, what: 'the follower to read events 2 and 3' });
    ac.abort();
    await reading;
    await sink.close();
    expect(seen).toEqual([event(1), event(2), event(3)]);
  });
});
